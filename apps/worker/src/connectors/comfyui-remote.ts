import { ServiceName, parseWith } from '@emp/core';
import { z } from 'zod';
import type { Connector } from '../connector';
import { ComfyUIOptions, comfyuiConnector } from './comfyui';

/**
 * A ComfyUI on someone else's infrastructure (a customer's server, a hosted
 * endpoint): the same protocol, but its URL is required, it usually sits
 * behind auth (`headers`) and TLS with a private CA (`tls.ca`: trusted in
 * addition to the system's, for this connector only; verification is never
 * switched off). Its own service name keeps such jobs apart from those of the
 * worker's local ComfyUI.
 */
export const ComfyUIRemoteOptions = ComfyUIOptions.extend({
  service: ServiceName.default('comfyui-remote'),
  baseUrl: z.string().url(),
  /** a shared server is farther away: more patience per request and a slower watchdog by default */
  requestTimeoutMs: z.number().int().positive().max(3_600_000).default(60_000),
  watchdogMs: z.number().int().positive().max(3_600_000).default(10_000),
}).strict();
export type ComfyUIRemoteOptions = z.input<typeof ComfyUIRemoteOptions>;

export function comfyuiRemoteConnector(options: ComfyUIRemoteOptions): Connector {
  const config = parseWith(ComfyUIRemoteOptions, options, 'comfyui-remote connector options');
  return comfyuiConnector(config);
}
