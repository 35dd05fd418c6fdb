import { hash } from 'node:crypto';

/**
 * JSON with object keys sorted and arrays of scalars sorted and de-duplicated
 * (every array in requirements and capabilities is a set), and empty arrays and
 * objects dropped, so equal requirements always give the same text and hash.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(canonicalize(value) ?? {});
}

function canonicalize(value: unknown): unknown {
  if (Array.isArray(value)) {
    if (value.length === 0) return undefined;
    const items = value.map(canonicalize);
    if (items.every((item) => typeof item !== 'object' || item === null)) {
      const unique = [...new Map(items.map((item) => [JSON.stringify(item), item])).entries()];
      unique.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      return unique.map(([, item]) => item);
    }
    return items;
  }
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const item = canonicalize((value as Record<string, unknown>)[key]);
      if (item !== undefined) out[key] = item;
    }
    return Object.keys(out).length === 0 ? undefined : out;
  }
  return value;
}

/**
 * What an idempotency key is kept with: the SHA-1 of the request without its key, canonically
 * ordered, so a repeat of the same request matches and any other is a conflict ('' without a key).
 */
export function idempotencyFingerprint(request: { idempotency_key?: string }): string {
  // most submits have no key: no copy of the request for them
  if (!request.idempotency_key) return '';
  const { idempotency_key: _key, ...rest } = request;
  return hash('sha1', canonicalJson(rest), 'hex');
}

/** A short content hash: 64 bits of SHA-1, plenty to tell classes and profiles apart. */
export function contentId(text: string): string {
  // the one-shot hash: a Hash object per call showed in the API's profile (every submit names its class)
  return hash('sha1', text, 'hex').slice(0, 16);
}
