import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  TaskstreamClient,
  type TaskEvent,
  type TaskstreamOptions,
  UnauthorizedError,
} from "../src/index.js";
import { FakeFetch, OPEN, TASK, cursor, frame, progress } from "./fakes.js";

/** Let promises, stream reads and zero-delay work settle without moving the clock. */
async function settle(): Promise<void> {
  await vi.advanceTimersByTimeAsync(0);
}

let net: FakeFetch;
let target: EventTarget;
const clients: TaskstreamClient[] = [];

function solo(options: TaskstreamOptions = {}): TaskstreamClient {
  const client = new TaskstreamClient({
    fetch: net.fetch,
    locks: null,
    createChannel: null,
    eventTarget: target,
    random: () => 0.5,
    ...options,
  });
  clients.push(client);
  client.start();
  return client;
}

beforeEach(() => {
  vi.useFakeTimers();
  net = new FakeFetch();
  target = new EventTarget();
});

afterEach(() => {
  for (const client of clients.splice(0)) client.close();
  vi.useRealTimers();
});

describe("the stream", () => {
  it("opens with the cookie, applies events and tracks the cursor", async () => {
    const stream = net.stream();
    const client = solo();
    const all: TaskEvent[] = [];
    const mine: TaskEvent[] = [];
    client.subscribe("*", (e) => all.push(e));
    client.subscribe(TASK, (e) => mine.push(e));
    client.subscribe("another-task", () => expect.fail("not this task's event"));
    await settle();
    expect(client.getSnapshot().state).toBe("connecting");
    stream.push(OPEN);
    await settle();
    expect(client.getSnapshot()).toMatchObject({ state: "open", role: "solo", cursor: null });
    stream.push(progress(7, 40) + progress(8, 60));
    await settle();

    expect(net.requests).toHaveLength(1);
    expect(net.requests[0]).toMatchObject({ url: "/api/v1/events/stream", credentials: "include" });
    expect(net.requests[0]?.headers["last-event-id"]).toBeUndefined();
    expect(all.map((e) => e.event_type === "task.progress" && e.data.progress)).toEqual([40, 60]);
    expect(mine).toHaveLength(2);
    expect(client.getSnapshot().cursor).toBe(cursor(8));
    expect(client.getTask(TASK)).toMatchObject({ status: "running", progress: 60, message: "step 60" });
  });

  it("reconnects with Last-Event-ID after a clean end, no sooner than the server's retry:", async () => {
    const first = net.stream();
    const client = solo();
    first.push(OPEN + progress(3, 10));
    await settle();
    first.end();
    await settle();
    expect(client.getSnapshot().state).toBe("reconnecting");
    const second = net.stream();
    await vi.advanceTimersByTimeAsync(2999);
    expect(net.requests).toHaveLength(1); // retry: 3000 is the floor
    await vi.advanceTimersByTimeAsync(1);
    expect(net.requests).toHaveLength(2);
    expect(net.requests[1]?.headers["last-event-id"]).toBe(cursor(3));
    second.push(OPEN + progress(4, 20));
    await settle();
    expect(client.getSnapshot()).toMatchObject({ state: "open", cursor: cursor(4) });
  });

  it("backs off with full jitter, doubling the ceiling, and resets only after stream-open", async () => {
    const client = solo({ random: () => 0.999, minRetryMs: 1000, maxRetryMs: 8000 });
    const delays: number[] = [];
    let last = Date.now();
    const failAndMeasure = async (): Promise<void> => {
      net.fail();
      await settle();
      const next = client.getSnapshot().nextRetryAt;
      expect(next).not.toBeNull();
      delays.push((next ?? 0) - last);
      await vi.advanceTimersByTimeAsync((next ?? 0) - Date.now());
      last = Date.now();
    };
    for (let i = 0; i < 5; i += 1) await failAndMeasure();
    // ceiling 2000, 4000, 8000, 8000, 8000 (capped) × 0.999
    expect(delays).toEqual([1998, 3996, 7992, 7992, 7992]);

    // A 200 that ends before stream-open (a draining node) still counts as a failure.
    const empty = net.stream();
    await settle();
    empty.end();
    await settle();
    expect((client.getSnapshot().nextRetryAt ?? 0) - Date.now()).toBe(7992);
    await vi.advanceTimersByTimeAsync(7992);

    const good = net.stream();
    await settle();
    good.push(OPEN);
    await settle();
    good.abort(); // the network drops an established stream: backoff starts over
    await settle();
    // attempt 1 again: ceiling 2000, but the server's retry: 3000 is the floor
    expect((client.getSnapshot().nextRetryAt ?? 0) - Date.now()).toBe(3000);
  });

  it("takes the cursor from id-only frames, never moving it back", async () => {
    const client = solo();
    const first = net.stream();
    first.push(OPEN + progress(3, 10));
    await settle();
    // Other users' records moved the partition on: the server sends the id alone.
    first.push(`id: ${cursor(9)}\n\n` + frame("heartbeat", { t: 1 }));
    await settle();
    expect(client.getSnapshot().cursor).toBe(cursor(9));
    // An event and an older id-only frame in one chunk: the event's id stands.
    first.push(progress(12, 20) + `id: ${cursor(11)}\n\n`);
    await settle();
    expect(client.getSnapshot().cursor).toBe(cursor(12));
    first.end();
    net.stream();
    await vi.advanceTimersByTimeAsync(3000);
    expect(net.requests[1]?.headers["last-event-id"]).toBe(cursor(12));
  });

  it("draws the jitter from [0, ceiling]: a zero draw retries at once", async () => {
    solo({ random: () => 0, minRetryMs: 1000 });
    net.fail();
    await settle();
    expect(net.requests).toHaveLength(2);
  });
});

describe("authentication", () => {
  it("refreshes once after a 401 and resumes; a second 401 stops for good", async () => {
    const refresh = vi.fn(async () => {});
    const client = solo({ auth: { mode: "cookie", refresh } });
    const first = net.stream();
    first.push(OPEN + progress(5, 50));
    await settle();
    first.end(); // the token in the cookie expired: the server ended the stream
    await vi.advanceTimersByTimeAsync(3000);
    net.refuse(401, "not_authenticated");
    await settle();
    expect(refresh).toHaveBeenCalledTimes(1);
    const resumed = net.stream();
    await settle();
    expect(net.requests).toHaveLength(3);
    expect(net.requests[2]?.headers["last-event-id"]).toBe(cursor(5));
    resumed.push(OPEN + progress(6, 60));
    await settle();
    expect(client.getSnapshot()).toMatchObject({ state: "open", cursor: cursor(6) });

    // Refreshed, yet refused again: no loop, state unauthorized.
    resumed.end();
    await vi.advanceTimersByTimeAsync(3000);
    net.refuse(401, "not_authenticated");
    await settle();
    expect(refresh).toHaveBeenCalledTimes(2); // a stream opened in between: one new refresh
    net.refuse(401, "token_not_valid");
    await settle();
    expect(client.getSnapshot()).toMatchObject({
      state: "unauthorized",
      lastError: { status: 401, code: "token_not_valid" },
    });
    await vi.advanceTimersByTimeAsync(10 * 60 * 1000);
    expect(net.requests).toHaveLength(5);
    expect(refresh).toHaveBeenCalledTimes(2);

    // The user signed in again.
    net.stream().push(OPEN);
    client.reconnect();
    await settle();
    expect(net.requests).toHaveLength(6);
    expect(client.getSnapshot().state).toBe("open");
  });

  it("stops when the refresh says the session is over", async () => {
    const client = solo({
      auth: {
        mode: "cookie",
        refresh: async () => {
          throw new UnauthorizedError("refresh token expired");
        },
      },
    });
    net.refuse(401, "not_authenticated");
    await settle();
    expect(client.getSnapshot().state).toBe("unauthorized");
    await vi.advanceTimersByTimeAsync(60_000);
    expect(net.requests).toHaveLength(1);
  });

  it("bearer mode asks for a token on every attempt and forces a refresh after a 401", async () => {
    let version = 1;
    const getToken = vi.fn(async ({ forceRefresh }: { forceRefresh: boolean }) => {
      if (forceRefresh) version += 1;
      return `token-${version}`;
    });
    solo({ auth: { mode: "bearer", getToken } });
    net.refuse(401, "token_not_valid");
    await settle();
    net.stream().push(OPEN);
    await settle();
    expect(getToken.mock.calls.map(([o]) => o.forceRefresh)).toEqual([false, true]);
    expect(net.requests.map((r) => r.headers.authorization)).toEqual([
      "Bearer token-1",
      "Bearer token-2",
    ]);
    expect(net.requests[0]?.credentials).toBe("same-origin");
  });

  it("shares one refresh between the stream and the page", async () => {
    let resolve!: () => void;
    const refresh = vi.fn(() => new Promise<void>((r) => (resolve = r)));
    const client = solo({ auth: { mode: "cookie", refresh } });
    net.refuse(401, "not_authenticated");
    await settle();
    const pageRefresh = client.refreshAuth();
    expect(refresh).toHaveBeenCalledTimes(1);
    resolve();
    await pageRefresh;
    expect(refresh).toHaveBeenCalledTimes(1);
  });
});

describe("refusals and resets", () => {
  it("waits at least Retry-After on 429, state throttled, even when the network comes back", async () => {
    const client = solo({ random: () => 0 });
    net.refuse(429, "too_many_streams", { "retry-after": "7" });
    await settle();
    const start = Date.now();
    expect(client.getSnapshot()).toMatchObject({
      state: "throttled",
      nextRetryAt: start + 7000,
      lastError: { status: 429, code: "too_many_streams" },
    });
    target.dispatchEvent(new Event("online"));
    target.dispatchEvent(new Event("visibilitychange"));
    await vi.advanceTimersByTimeAsync(6999);
    expect(net.requests).toHaveLength(1);
    net.stream().push(OPEN);
    await vi.advanceTimersByTimeAsync(1);
    expect(net.requests).toHaveLength(2);
    expect(client.getSnapshot().state).toBe("open");
  });

  it("on stream-reset drops the cursor, forgets task state and calls onReset", async () => {
    const client = solo({ initialCursor: cursor(9, "OLD") });
    const resets: unknown[] = [];
    client.onReset((info) => resets.push(info));
    const taskChanges = vi.fn();
    client.onTask(TASK, taskChanges);
    const first = net.stream();
    await settle();
    expect(net.requests[0]?.headers["last-event-id"]).toBe(cursor(9, "OLD"));
    const reset = { reason: "epoch-changed", requested: cursor(9, "OLD"), resumed_from: "earliest" };
    first.push(OPEN + progress(1, 10));
    await settle();
    expect(client.getTask(TASK)?.progress).toBe(10); // a different epoch is never a duplicate
    first.push(frame("stream-reset", reset));
    await settle();
    expect(resets).toEqual([reset]);
    expect(client.getSnapshot().cursor).toBeNull();
    expect(client.getTask(TASK)).toBeUndefined();
    expect(taskChanges).toHaveBeenCalledTimes(2);
    first.end();
    await vi.advanceTimersByTimeAsync(3000);
    expect(net.requests[1]?.headers["last-event-id"]).toBeUndefined();
  });

  it("starts at `since` while it has no cursor, then resumes by the cursor", async () => {
    const client = solo({ since: new Date("2026-01-02T03:04:05.250Z") });
    const first = net.stream();
    await settle();
    expect(net.requests[0]?.url).toBe("/api/v1/events/stream?since=2026-01-02T03%3A04%3A05.250Z");
    expect(net.requests[0]?.headers["last-event-id"]).toBeUndefined();
    first.push(OPEN + progress(4, 40));
    await settle();
    expect(client.getTask(TASK)?.progress).toBe(40);
    first.end();
    net.stream();
    await vi.advanceTimersByTimeAsync(3000);
    expect(net.requests[1]?.url).toBe("/api/v1/events/stream");
    expect(net.requests[1]?.headers["last-event-id"]).toBe(cursor(4));
    expect(() => solo({ since: new Date("not a time") })).toThrow(RangeError);
  });

  it("treats a refused cursor (400 bad_cursor) as a reset", async () => {
    const client = solo({ initialCursor: "garbage" });
    const onReset = vi.fn();
    client.onReset(onReset);
    net.refuse(400, "bad_cursor");
    await settle();
    expect(onReset).toHaveBeenCalledWith({
      reason: "bad-cursor",
      requested: "garbage",
      resumed_from: "head",
    });
    expect(client.getSnapshot().cursor).toBeNull();
  });
});

describe("liveness and the browser's signals", () => {
  it("reconnects after two missed heartbeats", async () => {
    const client = solo({ heartbeatMs: 15000 });
    const first = net.stream();
    first.push(OPEN + progress(2, 5));
    await settle();
    await vi.advanceTimersByTimeAsync(15000);
    first.push(frame("heartbeat", { t: 1 }));
    await vi.advanceTimersByTimeAsync(30999);
    expect(first.closed).toBe(false); // one missed heartbeat and a bit is fine
    await vi.advanceTimersByTimeAsync(1);
    expect(first.closed).toBe(true);
    expect(client.getSnapshot().state).toBe("reconnecting");
    net.stream();
    await vi.advanceTimersByTimeAsync(3000);
    expect(net.requests).toHaveLength(2);
    expect(net.requests[1]?.headers["last-event-id"]).toBe(cursor(2));
  });

  it("reconnects at once on online, visibilitychange and pageshow", async () => {
    const client = solo({ random: () => 0.999, maxRetryMs: 60000 });
    for (const signal of ["online", "visibilitychange", "pageshow"]) {
      net.fail();
      await settle();
      net.fail();
      await vi.advanceTimersByTimeAsync(1999);
      expect(client.getSnapshot().state).toBe("reconnecting");
      const before = net.requests.length;
      target.dispatchEvent(new Event(signal));
      await settle();
      expect(net.requests.length, signal).toBe(before + 1);
      // leave it waiting for the next loop
      await vi.advanceTimersByTimeAsync(60000);
    }
  });

  it("aborts on offline and waits for online", async () => {
    const client = solo();
    const stream = net.stream();
    stream.push(OPEN);
    await settle();
    target.dispatchEvent(new Event("offline"));
    await settle();
    expect(stream.closed).toBe(true);
    expect(client.getSnapshot().state).toBe("offline");
    await vi.advanceTimersByTimeAsync(120000);
    expect(net.requests).toHaveLength(1);
    net.stream().push(OPEN);
    target.dispatchEvent(new Event("online"));
    await settle();
    expect(net.requests).toHaveLength(2);
    expect(client.getSnapshot().state).toBe("open");
  });
});
