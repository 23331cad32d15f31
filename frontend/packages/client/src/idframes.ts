/**
 * Finds SSE frames that carry an `id:` and no `data:`. The server sends one at a heartbeat
 * when the user's partition moved on with other users' records (docs/events.md, "Id-only
 * frames"): EventSource takes the id as its last event id without firing an event, but
 * `eventsource-parser` dispatches only frames with data, so this watches the same text for
 * them. Keeping the cursor past those records spares the server a rescan on reconnect.
 */
export class IdOnlyFrames {
  private buffer = "";
  private id: string | null = null;
  private hasData = false;

  /** Feed decoded text; returns the ids of the id-only frames it completed, in order. */
  feed(text: string): string[] {
    this.buffer += text;
    const found: string[] = [];
    let start = 0;
    const length = this.buffer.length;
    while (start < length) {
      let end = start;
      while (end < length) {
        const c = this.buffer.charCodeAt(end);
        if (c === 10 || c === 13) break;
        end += 1;
      }
      if (end === length) break; // an unfinished line: wait for more text
      // CRLF is one line end; a CR at the very end may be the first half of one.
      if (this.buffer.charCodeAt(end) === 13 && end + 1 === length) break;
      const skip = this.buffer.charCodeAt(end) === 13 && this.buffer.charCodeAt(end + 1) === 10 ? 2 : 1;
      this.line(this.buffer.slice(start, end), found);
      start = end + skip;
    }
    this.buffer = this.buffer.slice(start);
    return found;
  }

  private line(line: string, found: string[]): void {
    if (line === "") {
      if (!this.hasData && this.id !== null) found.push(this.id);
      this.id = null;
      this.hasData = false;
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.hasData = true;
    else if (field === "id" && !value.includes("\0") && value !== "") this.id = value;
  }
}
