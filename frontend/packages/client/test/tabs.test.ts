import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { TaskstreamClient, type TaskEvent } from "../src/index.js";
import { FakeBus, FakeFetch, FakeLocks, OPEN, cursor, progress } from "./fakes.js";

async function settle(): Promise<void> {
  await vi.advanceTimersByTimeAsync(0);
}

let net: FakeFetch;
let locks: FakeLocks;
let bus: FakeBus;
const tabs: TaskstreamClient[] = [];

function tab(): { client: TaskstreamClient; seen: number[] } {
  const client = new TaskstreamClient({
    fetch: net.fetch,
    locks,
    createChannel: bus.create,
    eventTarget: new EventTarget(),
    random: () => 0.5,
    shareKey: "test",
  });
  const seen: number[] = [];
  client.subscribe("*", (e: TaskEvent) => {
    if (e.event_type === "task.progress") seen.push(e.data.progress);
  });
  client.start();
  tabs.push(client);
  return { client, seen };
}

beforeEach(() => {
  vi.useFakeTimers();
  net = new FakeFetch();
  locks = new FakeLocks();
  bus = new FakeBus();
});

afterEach(() => {
  for (const client of tabs.splice(0)) client.close();
  vi.useRealTimers();
});

describe("one stream per browser", () => {
  it("elects one leader whose stream feeds every tab", async () => {
    const first = net.stream();
    const [a, b, c] = [tab(), tab(), tab()];
    await settle();
    expect(net.requests).toHaveLength(1);
    expect([a, b, c].map((t) => t.client.getSnapshot().role)).toEqual([
      "leader",
      "follower",
      "follower",
    ]);
    first.push(OPEN + progress(1, 10) + progress(2, 20));
    await settle();
    for (const t of [a, b, c]) {
      expect(t.seen).toEqual([10, 20]);
      expect(t.client.getSnapshot()).toMatchObject({ state: "open", cursor: cursor(2) });
    }
    expect(net.requests).toHaveLength(1);
  });

  it("hands over when the leader closes: resumes with Last-Event-ID, no gap, no duplicate", async () => {
    const first = net.stream();
    const [a, b, c] = [tab(), tab(), tab()];
    await settle();
    first.push(OPEN + progress(1, 10) + progress(2, 20));
    await settle();

    const second = net.stream();
    a.client.close();
    await settle();
    expect(first.closed).toBe(true);
    expect(b.client.getSnapshot().role).toBe("leader");
    expect(c.client.getSnapshot().role).toBe("follower");
    expect(net.requests).toHaveLength(2);
    expect(net.requests[1]?.headers["last-event-id"]).toBe(cursor(2));
    // The server may repeat what a tab already has (e.g. a relay still in flight): dropped.
    second.push(OPEN + progress(2, 20) + progress(3, 30) + progress(4, 40));
    await settle();
    expect(b.seen).toEqual([10, 20, 30, 40]);
    expect(c.seen).toEqual([10, 20, 30, 40]);
    expect(c.client.getSnapshot().cursor).toBe(cursor(4));
  });

  it("a follower that missed the leader's last relay still gets it from the new stream", async () => {
    const first = net.stream();
    const [a, b] = [tab(), tab()];
    await settle();
    first.push(OPEN + progress(1, 10));
    await settle();
    // The leader's tab dies between receiving 2 and relaying it: b never hears of it.
    const relay = (a.client as unknown as { post: (m: unknown) => void }).post;
    (a.client as unknown as { post: (m: unknown) => void }).post = () => {};
    first.push(progress(2, 20));
    await settle();
    expect(a.seen).toEqual([10, 20]);
    expect(b.seen).toEqual([10]);
    (a.client as unknown as { post: typeof relay }).post = relay;

    const second = net.stream();
    a.client.close();
    await settle();
    expect(net.requests[1]?.headers["last-event-id"]).toBe(cursor(1));
    second.push(OPEN + progress(2, 20) + progress(3, 30));
    await settle();
    expect(b.seen).toEqual([10, 20, 30]);
  });

  it("followers mirror the leader's state and a new tab learns it at once", async () => {
    const a = tab();
    net.refuse(429, "too_many_streams", { "retry-after": "5" });
    await settle();
    expect(a.client.getSnapshot().state).toBe("throttled");
    const b = tab();
    await settle();
    expect(b.client.getSnapshot()).toMatchObject({
      role: "follower",
      state: "throttled",
      lastError: { status: 429, code: "too_many_streams" },
    });
  });

  it("a follower's reconnect() reaches the leader", async () => {
    const a = tab();
    const b = tab();
    net.refuse(401, "not_authenticated"); // no refresh configured: unauthorized
    await settle();
    expect(b.client.getSnapshot().state).toBe("unauthorized");
    net.stream().push(OPEN);
    b.client.reconnect();
    await settle();
    expect(net.requests).toHaveLength(2);
    expect(a.client.getSnapshot().state).toBe("open");
    expect(b.client.getSnapshot().state).toBe("open");
  });

  it("falls back to a stream per tab without Web Locks", async () => {
    const make = (): TaskstreamClient => {
      const client = new TaskstreamClient({
        fetch: net.fetch,
        locks: null,
        createChannel: bus.create,
        eventTarget: new EventTarget(),
      });
      tabs.push(client);
      client.start();
      return client;
    };
    const [x, y] = [make(), make()];
    await settle();
    expect(net.requests).toHaveLength(2);
    expect([x.getSnapshot().role, y.getSnapshot().role]).toEqual(["solo", "solo"]);
  });
});
