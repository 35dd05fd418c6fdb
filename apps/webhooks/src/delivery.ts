import { type AddressClass, addressClass, webhookTargetProblem } from '@emp/core';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction, Socket } from 'node:net';

/** Resolves a host name to its addresses (node:dns by default; tests may pass their own). */
export type Resolver = (hostname: string) => Promise<LookupAddress[]>;

export interface SendOptions {
  allowPrivate: boolean;
  timeoutMs: number;
  resolve?: Resolver;
}

export interface SendResult {
  /** the HTTP status, absent when no response came */
  status?: number;
  latencyMs: number;
  /** why no (complete) response came */
  error?: string;
  /** the target was refused before anything was sent (SSRF guard, bad scheme): not worth retrying */
  refused?: boolean;
  /** Retry-After of the answer, in ms from now */
  retryAfterMs?: number;
  /** the first 1 KiB of the response body */
  response?: string;
}

const RESPONSE_KEPT = 1024;

class RefusedTarget extends Error {}

const systemResolver: Resolver = (hostname) =>
  new Promise((resolve, reject) => dnsLookup(hostname, { all: true, verbatim: true }, (error, addresses) => (error ? reject(error) : resolve(addresses))));

/**
 * POSTs `body` to `url` once. Redirects are not followed (a 3xx is an answer
 * like any other); unless `allowPrivate`, a host resolving to a loopback,
 * private, link-local, CGNAT or metadata address is refused, both when its name
 * is resolved and on the address the socket actually connected to (DNS
 * rebinding cannot slip one in between).
 */
export function sendWebhook(url: string, headers: Record<string, string>, body: string, options: SendOptions): Promise<SendResult> {
  const started = performance.now();
  const elapsed = () => Math.round((performance.now() - started) * 10) / 10;
  const problem = webhookTargetProblem(url, { allowPrivate: options.allowPrivate });
  if (problem) return Promise.resolve({ latencyMs: 0, error: `refused: ${problem}`, refused: true });
  const target = new URL(url);
  const resolve = options.resolve ?? systemResolver;
  const lookup: LookupFunction = (hostname, lookupOptions, callback) => {
    resolve(hostname).then(
      (addresses) => {
        const usable = options.allowPrivate ? addresses : addresses.filter((a) => !addressClass(a.address));
        if (usable.length === 0) {
          const first = addresses[0];
          const why = first ? `resolves to ${first.address} (${describe(addressClass(first.address))})` : 'resolves to no address';
          callback(new RefusedTarget(`host ${hostname} ${why}; webhooks go to public hosts only`), '', 0);
        } else if ((lookupOptions as { all?: boolean }).all) {
          (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, usable);
        } else {
          callback(null, usable[0]!.address, usable[0]!.family);
        }
      },
      (error: Error) => callback(error as NodeJS.ErrnoException, '', 0),
    );
  };

  return new Promise((settle) => {
    let done = false;
    const finish = (result: Omit<SendResult, 'latencyMs'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      settle({ ...result, latencyMs: elapsed() });
    };
    const request = (target.protocol === 'https:' ? https : http).request(target, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'user-agent': 'emp-webhooks/0.1', ...headers },
      lookup,
      agent: false,
    });
    const timer = setTimeout(() => request.destroy(new Error(`no answer within ${options.timeoutMs} ms`)), options.timeoutMs);
    request.on('socket', (socket: Socket) => {
      socket.once('connect', () => {
        const kind = socket.remoteAddress ? addressClass(socket.remoteAddress) : undefined;
        if (kind && !options.allowPrivate) {
          request.destroy(new RefusedTarget(`connected to ${socket.remoteAddress} (${describe(kind)}); webhooks go to public hosts only`));
        }
      });
    });
    request.on('error', (error) => {
      const refused = error instanceof RefusedTarget;
      finish({ error: refused ? `refused: ${error.message}` : error.message, refused: refused || undefined });
    });
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      let kept = 0;
      response.on('data', (chunk: Buffer) => {
        if (kept < RESPONSE_KEPT) {
          chunks.push(chunk.subarray(0, RESPONSE_KEPT - kept));
          kept += chunk.length;
        }
      });
      response.on('error', (error) => finish({ status: response.statusCode, error: error.message }));
      response.on('end', () => {
        const retryAfterMs = parseRetryAfter(response.headers['retry-after']);
        const text = Buffer.concat(chunks).toString('utf8');
        finish({ status: response.statusCode!, retryAfterMs, response: text || undefined });
      });
    });
    request.end(body);
  });
}

/** Retry-After as ms from now: delay-seconds or an HTTP date (RFC 9110 10.2.3); undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

function describe(kind: AddressClass | undefined): string {
  return kind ? `${kind === 'shared' ? 'carrier-grade NAT' : kind} address` : 'public address';
}
