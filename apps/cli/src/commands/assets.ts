import { SIGNED_ASSET_URL_MAX_S, SignedAssetUrl } from '@emp/core';
import type { Command } from 'commander';
import { z } from 'zod';
import { callApi } from '../api-call';
import { parseFlags } from '../flags';
import { json } from '../format';

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3_600, d: 86_400 };

/** `90`, `90s`, `15m`, `1h`, `7d`: seconds. */
const durationFlag = z
  .string()
  .transform((text, ctx) => {
    const match = /^(\d+)\s*([smhd]?)$/.exec(text.trim());
    if (!match) {
      ctx.addIssue({ code: 'custom', message: `expected a duration such as 90s, 15m, 1h or 7d, got '${text}'` });
      return z.NEVER;
    }
    return Number(match[1]) * UNIT_SECONDS[match[2] || 's']!;
  })
  .pipe(z.number().int().min(1, 'at least 1 second').max(SIGNED_ASSET_URL_MAX_S, `at most ${SIGNED_ASSET_URL_MAX_S / 86_400} days`));

const SignFlags = z.object({
  expires: durationFlag,
  api: z.string().url(),
  apiKey: z.string().optional(),
  json: z.boolean().default(false),
});

/** `emp assets sign`: URLs of stored outputs that work without a key until they expire, signed by the API. */
export function registerAssets(program: Command): void {
  const assets = program.command('assets').description('assets the workers stored: signed URLs to share them');

  assets
    .command('sign')
    .description('a URL of one asset that anyone may fetch without a key until it expires (asks the API: POST /v1/assets/sign)')
    .argument('<key>', 'the asset key (<job id>/<attempt>/<file>) or the URL a job result gave for it')
    .option('--expires <duration>', 'how long the URL works: 90s, 15m, 1h, 7d (at most 7 days)', '1h')
    .option('--api <url>', 'the API (default: EMP_API_URL, else http://127.0.0.1:3331)', process.env.EMP_API_URL || 'http://127.0.0.1:3331')
    .option('--api-key <key>', 'an API key that may read the asset\'s job (default: EMP_API_KEY)', process.env.EMP_API_KEY)
    .option('--json', 'print JSON ({url, expires_at}) for scripts')
    .action(async (asset: string, options: Record<string, unknown>) => {
      const flags = parseFlags(SignFlags, options);
      const named = /^https?:\/\//.test(asset) ? { url: asset } : { key: asset };
      const signed = await callApi(flags, 'POST', '/v1/assets/sign', SignedAssetUrl, { ...named, expires_in_s: flags.expires });
      if (flags.json) process.stdout.write(`${json(signed)}\n`);
      else {
        process.stdout.write(`${signed.url}\n`);
        process.stderr.write(`works without a key until ${new Date(signed.expires_at).toISOString()}\n`);
      }
    });
}
