/**
 * Stream cursors (docs/events.md, "The cursor"): `source:partition:offset@epoch`, comma-joined.
 * Tabs compare cursors to drop an event they already applied: after a leader hand-over the
 * new leader may be fed an event a follower got from the old leader too.
 */

interface Entry {
  offset: number;
  epoch: string;
}

function entries(cursor: string): Map<string, Entry> | null {
  const out = new Map<string, Entry>();
  for (const part of cursor.split(",")) {
    const at = part.lastIndexOf("@");
    const colon = part.lastIndexOf(":", at < 0 ? undefined : at);
    if (at < 0 || colon < 0) return null;
    const offset = Number(part.slice(colon + 1, at));
    if (!Number.isSafeInteger(offset)) return null;
    out.set(part.slice(0, colon), { offset, epoch: part.slice(at + 1) });
  }
  return out;
}

/**
 * True when `next` moves past `current` in some partition, so the event it belongs to was not
 * applied yet. Anything unparsable, or a new epoch, counts as new: never drop an event on doubt.
 */
export function isAfter(next: string, current: string | null): boolean {
  if (current === null || current === "") return true;
  const a = entries(next);
  const b = entries(current);
  if (a === null || b === null) return next !== current;
  for (const [key, entry] of a) {
    const seen = b.get(key);
    if (seen === undefined || seen.epoch !== entry.epoch || entry.offset > seen.offset) return true;
  }
  return false;
}
