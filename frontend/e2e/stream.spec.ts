/**
 * The demo page on the real stack, in Debian's Chromium. Each scenario is one claim of the
 * client (frontend/README.md) checked from outside: the server's gauge, the wire, the page.
 */
import { type Browser, type BrowserContext, type Page, expect, test } from "@playwright/test";
import { BASE, SHORT_TOKEN_BASE, user } from "./env.js";
import {
  createTask,
  expectState,
  expectedTrail,
  login,
  openTab,
  pageLog,
  recordWire,
  streamsOpen,
  taskTrail,
  waitFinished,
} from "./helpers.js";

test.beforeEach(async () => {
  // Every scenario starts from no stream on the server, so its counts are its own.
  await expect.poll(() => streamsOpen(BASE), { timeout: 30_000 }).toBe(0);
});

async function roles(pages: Page[]): Promise<string[]> {
  return Promise.all(pages.map((p) => p.locator("#connection").getAttribute("data-role").then(String)));
}

test("8 tabs hold one stream; when the leader tab closes the others go on without a gap", async ({ browser }) => {
  const context = await browser.newContext();
  const wire = recordWire(context);
  const first = await context.newPage();
  await login(first, BASE, user("tabs"));
  const pages = [first];
  for (let i = 1; i < 8; i += 1) pages.push(await openTab(context, BASE));

  await expect.poll(() => streamsOpen(BASE)).toBe(1);
  const before = await roles(pages);
  expect(before.filter((r) => r === "leader")).toHaveLength(1);
  expect(before.filter((r) => r === "follower")).toHaveLength(7);
  const leader = pages[before.indexOf("leader")] as Page;
  const others = pages.filter((p) => p !== leader);

  // A task long enough to close the leader in its middle, started from a follower tab.
  const steps = 40;
  const taskId = await createTask(others[0] as Page, steps, 150);
  await expect
    .poll(async () => taskTrail(await pageLog(others[1] as Page), taskId).length, { timeout: 30_000 })
    .toBeGreaterThanOrEqual(8);
  // Running: Cancel is offered (the follower tab learnt of the task from its first event).
  await expect((others[1] as Page).locator(`.task[data-task-id="${taskId}"] .cancel`)).toHaveCount(1);
  await leader.close();

  for (const page of others) await waitFinished(page, taskId);
  for (const page of others) {
    // Every tab got every event exactly once, in order, across the hand-over.
    expect(taskTrail(await pageLog(page), taskId)).toEqual(expectedTrail(steps));
  }
  const after = await roles(others);
  expect(after.filter((r) => r === "leader")).toHaveLength(1);
  await expect.poll(() => streamsOpen(BASE)).toBe(1);

  // Exactly two streams in the whole run: the first leader's, and its successor's, which
  // resumed from the cursor of the last event it had applied.
  const requests = wire.filter((e) => e.kind === "stream-request");
  expect(requests).toHaveLength(2);
  expect(requests[0]?.lastEventId).toBeUndefined();
  expect(requests[1]?.lastEventId).toMatch(/^task\.events.*:\d+:\d+@/);
  await context.close();
});

test("an expired token is refreshed once and the stream resumes where it was", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const wire = recordWire(page);
  await login(page, SHORT_TOKEN_BASE, user("refresh"));
  // 30 steps × 400 ms outlive the 6 s token: the server ends the stream at expiry.
  const steps = 30;
  const taskId = await createTask(page, steps, 400);
  await waitFinished(page, taskId, 90_000);
  expect(taskTrail(await pageLog(page), taskId)).toEqual(expectedTrail(steps));

  const refused = wire.filter((e) => e.kind === "stream-response" && e.status === 401);
  expect(refused.length).toBeGreaterThanOrEqual(1);
  // After each 401 of the stream: one refresh, then a stream that opens, resuming by cursor.
  for (const denial of refused) {
    const rest = wire.slice(wire.indexOf(denial) + 1);
    const next = rest.findIndex((e) => e.kind === "stream-request");
    expect(next).toBeGreaterThanOrEqual(0);
    expect(rest.slice(0, next).filter((e) => e.kind === "refresh")).toHaveLength(1);
    expect(rest[next]?.lastEventId).toMatch(/@/);
    expect(rest.slice(next).find((e) => e.kind === "stream-response")?.status).toBe(200);
  }
  const streamRequests = wire.filter((e) => e.kind === "stream-request").slice(1);
  expect(streamRequests.every((e) => e.lastEventId !== undefined)).toBe(true);
  await expectState(page, "open");
  await context.close();
});

test("the sixth device is throttled and gets its stream when another device closes", async ({ browser }) => {
  const who = user("devices");
  const devices: BrowserContext[] = [];
  for (let i = 0; i < 5; i += 1) {
    const context = await browser.newContext();
    await login(await context.newPage(), BASE, who);
    devices.push(context);
  }
  await expect.poll(() => streamsOpen(BASE)).toBe(5);

  const sixth = await browser.newContext();
  const page = await sixth.newPage();
  const wire = recordWire(page);
  await page.goto(`${BASE}/`);
  await page.fill("#login input[name=username]", who.username);
  await page.fill("#login input[name=password]", who.password);
  await page.click("#login button");
  await expectState(page, "throttled");
  await expect(page.locator("#connection")).toContainText("too_many_streams");
  const firstRefusal = wire.find((e) => e.kind === "stream-response" && e.status === 429);
  expect(firstRefusal).toBeDefined();

  await (devices.shift() as BrowserContext).close();
  await expectState(page, "open", 60_000);
  await expect.poll(() => streamsOpen(BASE)).toBe(5);
  // Never sooner than the server's Retry-After (5 s) after a refusal.
  const requests = wire.filter((e) => e.kind === "stream-request");
  for (let i = 1; i < requests.length; i += 1) {
    expect((requests[i]?.at ?? 0) - (requests[i - 1]?.at ?? 0)).toBeGreaterThanOrEqual(4_900);
  }
  for (const context of [...devices, sixth]) await context.close();
});

test("a stream-reset makes the page refetch its tasks", async ({ browser }: { browser: Browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await login(page, BASE, user("reset"));
  const taskId = await createTask(page, 2, 50);
  await waitFinished(page, taskId);
  const cursor = await page.evaluate(
    () => (window as unknown as { taskstreamDemo: { client: { getSnapshot(): { cursor: string | null } } } })
      .taskstreamDemo.client.getSnapshot().cursor,
  );
  expect(cursor).toMatch(/@/);
  // A position under another topic identity (as if the topic had been re-created), far
  // beyond the real one: the server cannot honour it either way (`epoch-changed`, or
  // `cursor-ahead` should it not know the topic's epoch).
  const position = String(cursor).split("@")[0] ?? "";
  const forged = `${position.replace(/:\d+$/, ":999999999")}@${"A".repeat(22)}`;
  await context.addInitScript((initialCursor) => {
    (window as unknown as { taskstreamDemoOptions: object }).taskstreamDemoOptions = { initialCursor };
  }, forged);
  const wire = recordWire(page);
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  await page.reload();
  const snapshot = (): Promise<unknown> =>
    page.evaluate(() => {
      const demo = (window as unknown as { taskstreamDemo?: { client: { getSnapshot(): unknown }; log: unknown[] } })
        .taskstreamDemo;
      return { snapshot: demo?.client.getSnapshot(), log: demo?.log };
    });
  try {
    await expect(page.locator("#resets")).toBeVisible();
  } catch (error) {
    console.log("state at failure:", JSON.stringify({ page: await snapshot(), wire, errors }));
    throw error;
  }
  const log = await pageLog(page);
  const reset = log.find((e) => e.type === "stream-reset");
  expect(["epoch-changed", "cursor-ahead"]).toContain(reset?.reason);
  expect(wire.find((e) => e.kind === "stream-request")?.lastEventId).toBe(forged);
  // The load's own fetch, and one more because of the reset.
  await expect.poll(() => wire.filter((e) => e.kind === "tasks-get").length).toBe(2);
  const refetch = wire.filter((e) => e.kind === "tasks-get")[1];
  expect(refetch?.at ?? 0).toBeGreaterThanOrEqual(reset?.at ?? Infinity);
  // The page shows the server's state again: the finished task, with no Cancel button.
  const card = page.locator(`.task[data-task-id="${taskId}"]`);
  await expect(card).toHaveAttribute("data-status", "succeeded");
  await expect(card.locator(".cancel")).toHaveCount(0);
  await context.close();
});
