import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
// @ts-expect-error: a plain .mjs script without declarations
import { GENERATED, generate } from "../../../scripts/gen-lib.mjs";
import {
  applyTaskEvent,
  backoffDelay,
  isAfter,
  parseRetryAfter,
  parseTaskEvent,
  type TaskEvent,
} from "../src/index.js";
import { IdOnlyFrames } from "../src/idframes.js";

const TASK = "577e3e53-7a57-4772-b1d9-1c068f126ac9";
const envelope = { event_id: "e", version: 1, occurred_at: "t", user_id: 1, task_id: TASK, scope: "user" } as const;

describe("cursor order", () => {
  it("is after when any partition moved on, or on another epoch", () => {
    expect(isAfter("s:0:5@E", null)).toBe(true);
    expect(isAfter("s:0:5@E", "s:0:4@E")).toBe(true);
    expect(isAfter("s:0:5@E", "s:0:5@E")).toBe(false);
    expect(isAfter("s:0:4@E", "s:0:5@E")).toBe(false);
    expect(isAfter("s:0:1@F", "s:0:5@E")).toBe(true);
    expect(isAfter("s:0:5@E,s:1:2@E", "s:0:5@E")).toBe(true);
    expect(isAfter("s:0:5@E,s:1:2@E", "s:0:5@E,s:1:2@E")).toBe(false);
    expect(isAfter("task.events.abc:2:10@x-y_z", "task.events.abc:2:9@x-y_z")).toBe(true);
  });
});

describe("backoff", () => {
  it("is full jitter under a doubling, capped ceiling, floored", () => {
    const o = { minMs: 1000, maxMs: 30000, floorMs: 0, random: () => 0.5 };
    expect([0, 1, 2, 3, 4, 5, 6].map((a) => backoffDelay(a, o))).toEqual([
      500, 1000, 2000, 4000, 8000, 15000, 15000,
    ]);
    expect(backoffDelay(0, { ...o, floorMs: 3000 })).toBe(3000);
  });

  it("reads Retry-After as seconds or a date", () => {
    expect(parseRetryAfter("5", 0)).toBe(5000);
    expect(parseRetryAfter(null, 0)).toBeNull();
    expect(parseRetryAfter("soon", 0)).toBeNull();
    const now = Date.parse("2026-11-30T10:00:00Z");
    expect(parseRetryAfter("Mon, 30 Nov 2026 10:00:09 GMT", now)).toBe(9000);
  });
});

describe("task state", () => {
  it("folds events, and a final state is final", () => {
    const events: TaskEvent[] = [
      { ...envelope, event_type: "task.started", data: {} },
      { ...envelope, event_type: "task.progress", data: { progress: 50, message: "half" } },
      { ...envelope, event_type: "task.succeeded", data: { result: { n: 1 } } },
      { ...envelope, event_type: "task.progress", data: { progress: 60 } },
    ];
    let state = undefined;
    const seen = [];
    for (const e of events) {
      state = applyTaskEvent(state, e);
      seen.push([state.status, state.progress]);
    }
    expect(seen).toEqual([
      ["running", 0],
      ["running", 50],
      ["succeeded", 100],
      ["succeeded", 100],
    ]);
    expect(state?.result).toEqual({ n: 1 });
  });

  it("skips frames that are not task events", () => {
    expect(parseTaskEvent("task.progress", "{")).toBeNull();
    expect(parseTaskEvent("task.progress", JSON.stringify({ ...envelope, event_type: "task.failed", data: {} }))).toBeNull();
    expect(parseTaskEvent("task.exploded", JSON.stringify({ ...envelope, event_type: "task.exploded", data: {} }))).toBeNull();
    expect(parseTaskEvent("task.started", JSON.stringify({ ...envelope, event_type: "task.started", data: {} }))).not.toBeNull();
  });
});

describe("generated types", () => {
  it("match schema/taskstream-events.schema.json (run `npm run gen:types` when this fails)", async () => {
    const committed = await readFile(GENERATED as URL, "utf8");
    expect(committed).toBe(await generate());
  });
});

describe("id-only frames", () => {
  it("are found across chunk boundaries and line-end styles; frames with data are not", () => {
    const frames = new IdOnlyFrames();
    expect(frames.feed("retry: 3000\n: taskstream\n\nid: a:0:1@E\ndata: x\n\nid: a:0:")).toEqual([]);
    expect(frames.feed("5@E\n")).toEqual([]);
    expect(frames.feed("\nevent: heartbeat\ndata: {}\n\n")).toEqual(["a:0:5@E"]);
    expect(frames.feed("id: a:0:6@E\r")).toEqual([]);
    expect(frames.feed("\n\r\n")).toEqual(["a:0:6@E"]);
    expect(frames.feed("id:a:0:7@E\r\rid: \n\n")).toEqual(["a:0:7@E"]);
  });
});
