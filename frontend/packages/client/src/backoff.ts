/**
 * Full-jitter exponential backoff (the AWS architecture blog's "full jitter", as centrifuge-js
 * does): a random delay in [0, min(max, min·2^attempt)], never below `floor` (the server's
 * `retry:`, or a 429's `Retry-After`). The randomness spreads a crowd of clients that lost the
 * same server over time instead of sending them back together.
 */
export function backoffDelay(
  attempt: number,
  options: { minMs: number; maxMs: number; floorMs: number; random: () => number },
): number {
  const ceiling = Math.min(options.maxMs, options.minMs * 2 ** Math.min(attempt, 30));
  return Math.max(options.floorMs, Math.floor(options.random() * ceiling));
}

/** `Retry-After` as milliseconds: delta-seconds or an HTTP date; null when absent or invalid. */
export function parseRetryAfter(value: string | null, now: number): number | null {
  if (value === null || value.trim() === "") return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}
