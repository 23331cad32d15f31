import { type BrowserContext, type Page, expect } from "@playwright/test";
import type { E2EUser } from "./env.js";

/** One entry of the demo's event log (frontend/demo/src/main.tsx, LogEntry). */
export interface LogEntry {
  type: string;
  id: string | null;
  taskId: string | null;
  progress: number | null;
  message: string | null;
  reason: string | null;
  at: number;
}

export async function login(page: Page, base: string, who: E2EUser): Promise<void> {
  await page.goto(`${base}/`);
  await page.fill("#login input[name=username]", who.username);
  await page.fill("#login input[name=password]", who.password);
  await page.click("#login button");
  await expectState(page, "open");
}

/** A further tab of a logged-in context: the session is in localStorage. */
export async function openTab(context: BrowserContext, base: string): Promise<Page> {
  const page = await context.newPage();
  await page.goto(`${base}/`);
  await expectState(page, "open");
  return page;
}

export async function expectState(page: Page, state: string, timeout = 30_000): Promise<void> {
  await expect(page.locator("#connection")).toHaveAttribute("data-state", state, { timeout });
}

export async function pageLog(page: Page): Promise<LogEntry[]> {
  return page.evaluate(() => (window as unknown as { taskstreamDemo: { log: LogEntry[] } }).taskstreamDemo.log);
}

/** The server process's open-streams gauge (realtime/metrics.py). */
export async function streamsOpen(base: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const match = /^taskstream_streams_open (\S+)$/m.exec(text);
  if (match?.[1] === undefined) throw new Error("taskstream_streams_open not in /metrics");
  return Number(match[1]);
}

export async function createTask(page: Page, steps: number, stepMs: number): Promise<string> {
  await page.fill("#steps", String(steps));
  await page.fill("#step_ms", String(stepMs));
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/api/v1/tasks/") && r.request().method() === "POST"),
    page.click("#create"),
  ]);
  expect(response.status()).toBe(201);
  return ((await response.json()) as { id: string }).id;
}

/** The messages of one task's events as this page received them, in order. */
export function taskTrail(log: LogEntry[], taskId: string): string[] {
  return log
    .filter((e) => e.taskId === taskId)
    .map((e) => (e.type === "task.progress" ? (e.message ?? "") : e.type));
}

export function expectedTrail(steps: number): string[] {
  const trail = ["task.started"];
  for (let i = 1; i <= steps; i += 1) trail.push(`step ${i}/${steps}`);
  trail.push("task.succeeded");
  return trail;
}

export async function waitFinished(page: Page, taskId: string, timeout = 60_000): Promise<void> {
  await expect
    .poll(async () => (await pageLog(page)).some((e) => e.taskId === taskId && e.type === "task.succeeded"), {
      timeout,
    })
    .toBe(true);
}

/** Stream requests and their answers, in the order the browser saw them. */
export interface WireEvent {
  kind: "stream-request" | "stream-response" | "refresh" | "tasks-get";
  status?: number;
  lastEventId?: string | undefined;
  at: number;
}

export function recordWire(target: BrowserContext | Page): WireEvent[] {
  const events: WireEvent[] = [];
  target.on("request", (request) => {
    const url = new URL(request.url());
    if (url.pathname === "/api/v1/events/stream") {
      events.push({ kind: "stream-request", lastEventId: request.headers()["last-event-id"], at: Date.now() });
    } else if (url.pathname === "/api/v1/auth/token/refresh/") {
      events.push({ kind: "refresh", at: Date.now() });
    } else if (url.pathname === "/api/v1/tasks/" && request.method() === "GET") {
      events.push({ kind: "tasks-get", at: Date.now() });
    }
  });
  target.on("response", (response) => {
    if (new URL(response.url()).pathname === "/api/v1/events/stream") {
      events.push({ kind: "stream-response", status: response.status(), at: Date.now() });
    }
  });
  return events;
}
