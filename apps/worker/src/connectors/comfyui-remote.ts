import { ComfyUIRemoteOptions, parseWith } from '@emp/core';
import { z } from 'zod';
import type { Connector } from '../connector';
import { ComfyUIConnectorOptions, comfyuiConnector } from './comfyui';

/** The options a machine's config states (ComfyUIRemoteOptions, in the core), and the asset store the output files go to. */
export const ComfyUIRemoteConnectorOptions = ComfyUIRemoteOptions.extend({ assets: ComfyUIConnectorOptions.shape.assets }).strict();
export type ComfyUIRemoteConnectorOptions = z.input<typeof ComfyUIRemoteConnectorOptions>;

export function comfyuiRemoteConnector(options: ComfyUIRemoteConnectorOptions): Connector {
  const config = parseWith(ComfyUIRemoteConnectorOptions, options, 'comfyui-remote connector options');
  return comfyuiConnector(config);
}
