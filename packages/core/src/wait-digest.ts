import { WAIT_BUCKET_BOUNDS_MS, type WaitDigest } from './api-protocol';

/**
 * The arithmetic of a WaitDigest (the queue history's submit-to-start waits),
 * shared by the API that records them and the pages that sum them: which
 * bucket a wait goes in, and several digests as one.
 */

/** Waits of several intervals as one: counts and histograms summed, percentiles read off the histogram. */
export function mergeWaitDigests(digests: readonly WaitDigest[]): WaitDigest | undefined {
  if (digests.length === 0) return undefined;
  if (digests.length === 1) return digests[0];
  const buckets: number[] = [];
  for (const digest of digests) digest.buckets.forEach((n, i) => (buckets[i] = (buckets[i] ?? 0) + n));
  const count = digests.reduce((sum, d) => sum + d.count, 0);
  const max = Math.max(...digests.map((d) => d.max_ms));
  return { count, p50_ms: histogramRank(buckets, count, 0.5, max), p95_ms: histogramRank(buckets, count, 0.95, max), max_ms: max, buckets: trimmedBuckets(buckets) };
}

/** The bucket of WAIT_BUCKET_BOUNDS_MS a wait goes in (the one after the last bound above an hour). */
export function waitBucketOf(ms: number): number {
  const at = WAIT_BUCKET_BOUNDS_MS.findIndex((bound) => ms <= bound);
  return at === -1 ? WAIT_BUCKET_BOUNDS_MS.length : at;
}

/** The value at `fraction` of a histogram, interpolated within its bucket (never above the largest wait seen). */
function histogramRank(buckets: readonly number[], count: number, fraction: number, max: number): number {
  const rank = Math.max(1, Math.ceil(fraction * count));
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    const n = buckets[i] ?? 0;
    if (seen + n >= rank && n > 0) {
      const low = i === 0 ? 0 : WAIT_BUCKET_BOUNDS_MS[i - 1]!;
      const high = Math.min(WAIT_BUCKET_BOUNDS_MS[i] ?? max, max);
      return Math.round(low + ((high - low) * (rank - seen)) / n);
    }
    seen += n;
  }
  return max;
}

/** A histogram without its trailing empty buckets (as stored). */
export function trimmedBuckets(buckets: readonly number[]): number[] {
  const filled = Array.from(buckets, (n) => n ?? 0);
  while (filled.length > 0 && filled.at(-1) === 0) filled.pop();
  return filled;
}
