/**
 * One tab's connection loop: fetch the stream, parse it, and decide when and how to try again.
 *
 * fetch rather than EventSource, because EventSource hides the status: a 401 (expired token)
 * and a 429 (too many streams) look like any network error to it, so clients either retry in
 * a tight loop or give up. Here each refusal has its own answer (docs/events.md, "Refusals").
 */
import { createParser } from "eventsource-parser";
import { backoffDelay, parseRetryAfter } from "./backoff.js";
import { IdOnlyFrames } from "./idframes.js";
import type { Auth, ConnectionState, ResetInfo, Snapshot } from "./types.js";

/** Throw this from `refresh()` or `getToken()` when the session is over: the client stops. */
export class UnauthorizedError extends Error {
  override name = "UnauthorizedError";
}

/** One named SSE event as received: what the leader relays to the other tabs. */
export interface Frame {
  readonly type: string;
  readonly id: string | null;
  readonly data: string;
}

export interface StreamHost {
  cursor(): string | null;
  frame(frame: Frame): void;
  /** The cursor was refused before any stream bytes (400/403): drop it, as for `stream-reset`. */
  cursorRefused(info: ResetInfo): void;
  status(patch: Partial<Pick<Snapshot, "state" | "nextRetryAt" | "lastError">>): void;
}

export interface StreamConfig {
  url: string;
  /** `?since=` (an ISO 8601 time) for an attempt without a cursor; null: none. */
  since: string | null;
  auth: Auth;
  minRetryMs: number;
  maxRetryMs: number;
  heartbeatMs: number;
  fetch: typeof fetch;
  random: () => number;
  eventTarget: EventTarget | null;
  /** Shared with the page's own 401 handling (`client.refreshAuth()`): one refresh at a time. */
  refresh: () => Promise<void>;
}

type Outcome =
  | { kind: "ended"; opened: boolean }
  | { kind: "failed"; status: number; code: string }
  | { kind: "retry-now" }
  | { kind: "unauthorized"; code: string }
  | { kind: "throttled"; retryAfterMs: number; code: string }
  | { kind: "offline" }
  | { kind: "stopped" };

/** The `type` of a relayed id-only frame: it moves the cursor and fires nothing. */
export const ID_ONLY = "taskstream:id";

/** Default when a 429 carries no usable Retry-After. */
const DEFAULT_RETRY_AFTER_MS = 5000;

export class StreamLoop {
  private running = false;
  private stopped = false;
  private controller: AbortController | null = null;
  private wake: (() => void) | null = null;
  private attempt = 0;
  private retryFloorMs = 0;
  /** A 401 was answered with a refresh and no stream has opened since: the next 401 is final. */
  private refreshedSinceOpen = false;
  private forceTokenRefresh = false;
  /** A 429's Retry-After: nothing, not even `online`, starts an attempt before this. */
  private notBefore = 0;
  private offline = false;
  private readonly listeners: Array<[EventTarget, string, EventListener]> = [];

  constructor(
    private readonly config: StreamConfig,
    private readonly host: StreamHost,
  ) {}

  start(): void {
    if (this.stopped) return;
    this.offline = typeof navigator !== "undefined" && navigator.onLine === false;
    this.listen();
    this.run();
  }

  stop(): void {
    this.stopped = true;
    for (const [target, type, listener] of this.listeners.splice(0)) {
      target.removeEventListener(type, listener);
    }
    this.controller?.abort();
    this.wake?.();
  }

  /** Start the next attempt now (not before a 429's Retry-After); restart after `unauthorized`. */
  reconnectNow(): void {
    if (this.stopped) return;
    if (!this.running) {
      this.refreshedSinceOpen = false;
      this.attempt = 0;
      this.run();
      return;
    }
    if (Date.now() >= this.notBefore) this.wake?.();
  }

  private listen(): void {
    const target = this.config.eventTarget;
    if (target === null) return;
    const on = (type: string, listener: EventListener, on: EventTarget = target): void => {
      on.addEventListener(type, listener);
      this.listeners.push([on, type, listener]);
    };
    on("online", () => {
      this.offline = false;
      this.reconnectNow();
    });
    on("offline", () => {
      // The request would hang until a timeout; end it now and wait for `online`.
      this.offline = true;
      this.controller?.abort();
      this.wake?.();
    });
    const visible = (): void => {
      if (typeof document === "undefined" || document.visibilityState === "visible") {
        this.reconnectNow();
      }
    };
    // visibilitychange fires on document, not window (an injected target gets it directly).
    on("visibilitychange", visible, target === globalThis.window ? document : target);
    on("pageshow", () => this.reconnectNow());
  }

  private run(): void {
    this.running = true;
    void this.loop().finally(() => {
      this.running = false;
    });
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      if (this.offline) {
        this.host.status({ state: "offline", nextRetryAt: null });
        await this.sleep(Infinity);
        continue;
      }
      const hold = this.notBefore - Date.now();
      if (hold > 0) {
        await this.sleep(hold);
        continue;
      }
      const outcome = await this.attemptOnce();
      if (this.stopped || outcome.kind === "stopped") return;
      let state: ConnectionState = "reconnecting";
      let delay: number;
      switch (outcome.kind) {
        case "retry-now":
          continue;
        case "offline":
          continue;
        case "unauthorized":
          this.host.status({
            state: "unauthorized",
            nextRetryAt: null,
            lastError: { status: 401, code: outcome.code },
          });
          return;
        case "ended":
          // A stream that never said stream-open (e.g. a draining node's empty answer) is a
          // failure for the backoff; after a real stream, only the server's retry: applies.
          if (!outcome.opened) this.attempt += 1;
          delay = this.delay();
          break;
        case "failed":
          this.attempt += 1;
          delay = this.delay();
          this.host.status({ lastError: { status: outcome.status, code: outcome.code } });
          break;
        case "throttled":
          this.attempt += 1;
          delay = Math.max(outcome.retryAfterMs, this.delay());
          this.notBefore = Date.now() + outcome.retryAfterMs;
          state = "throttled";
          this.host.status({ lastError: { status: 429, code: outcome.code } });
          break;
      }
      this.host.status({ state, nextRetryAt: Date.now() + delay });
      await this.sleep(delay);
    }
  }

  private delay(): number {
    return backoffDelay(this.attempt, {
      minMs: this.config.minRetryMs,
      maxMs: this.config.maxRetryMs,
      floorMs: this.retryFloorMs,
      random: this.config.random,
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        if (this.wake === done) this.wake = null;
        resolve();
      };
      if (Number.isFinite(ms)) timer = setTimeout(done, ms);
      this.wake = done;
    });
  }

  /** The stream URL, with `since` while there is no cursor to resume from (the server
   * prefers a cursor anyway; without one, `since` is the only start the page asked for). */
  private attemptUrl(cursor: string | null): string {
    const { url, since } = this.config;
    if (cursor !== null || since === null) return url;
    return `${url}${url.includes("?") ? "&" : "?"}since=${encodeURIComponent(since)}`;
  }

  private async attemptOnce(): Promise<Outcome> {
    const controller = new AbortController();
    this.controller = controller;
    this.host.status({ state: "connecting", nextRetryAt: null });
    const headers: Record<string, string> = { accept: "text/event-stream" };
    const cursor = this.host.cursor();
    if (cursor !== null) headers["last-event-id"] = cursor;
    const { auth } = this.config;
    if (auth.mode === "bearer") {
      try {
        const token = await auth.getToken({ forceRefresh: this.forceTokenRefresh });
        this.forceTokenRefresh = false;
        if (token) headers.authorization = `Bearer ${token}`;
      } catch (error) {
        if (error instanceof UnauthorizedError) return { kind: "unauthorized", code: "refresh_failed" };
        return { kind: "failed", status: 0, code: "token_unavailable" };
      }
    }
    if (this.stopped) return { kind: "stopped" };

    let response: Response;
    try {
      response = await this.config.fetch(this.attemptUrl(cursor), {
        headers,
        credentials: auth.mode === "cookie" ? "include" : "same-origin",
        cache: "no-store",
        signal: controller.signal,
      });
    } catch {
      return this.interrupted();
    }

    if (response.status === 401) {
      const code = await errorCode(response);
      if (this.refreshedSinceOpen) return { kind: "unauthorized", code };
      this.refreshedSinceOpen = true;
      if (auth.mode === "bearer") {
        this.forceTokenRefresh = true;
        return { kind: "retry-now" };
      }
      try {
        await this.config.refresh();
        return { kind: "retry-now" };
      } catch (error) {
        if (error instanceof UnauthorizedError) return { kind: "unauthorized", code };
        // A refresh that failed for another reason (network) is tried again next time.
        this.refreshedSinceOpen = false;
        return { kind: "failed", status: 401, code: "refresh_failed" };
      }
    }
    if (response.status === 429) {
      const retryAfter = parseRetryAfter(response.headers.get("retry-after"), Date.now());
      return {
        kind: "throttled",
        retryAfterMs: retryAfter ?? DEFAULT_RETRY_AFTER_MS,
        code: await errorCode(response),
      };
    }
    if ((response.status === 400 || response.status === 403) && cursor !== null) {
      const code = await errorCode(response);
      if (code === "bad_cursor" || code === "source_forbidden") {
        this.host.cursorRefused({
          reason: code === "bad_cursor" ? "bad-cursor" : "source-forbidden",
          requested: cursor,
          resumed_from: "head",
        });
        return { kind: "failed", status: response.status, code };
      }
    }
    const type = response.headers.get("content-type") ?? "";
    if (!response.ok || response.body === null || !type.startsWith("text/event-stream")) {
      return { kind: "failed", status: response.status, code: await errorCode(response) };
    }
    return this.read(response.body, controller);
  }

  private interrupted(): Outcome {
    if (this.stopped) return { kind: "stopped" };
    if (this.offline) return { kind: "offline" };
    return { kind: "failed", status: 0, code: "network" };
  }

  private async read(body: ReadableStream<Uint8Array>, controller: AbortController): Promise<Outcome> {
    let opened = false;
    const parser = createParser({
      onRetry: (ms) => {
        this.retryFloorMs = ms;
      },
      onEvent: (message) => {
        const type = message.event ?? "message";
        if (type === "stream-open") {
          // Only a stream the server really opened proves the way back works: reset here,
          // not on the 200, so a server that accepts and drops at once still backs off.
          opened = true;
          this.attempt = 0;
          this.refreshedSinceOpen = false;
          this.host.status({ state: "open", lastError: null });
        }
        this.host.frame({ type, id: message.id ?? null, data: message.data });
      },
    });
    // Two heartbeat intervals without a byte: the connection is dead though no error came
    // (a sleeping laptop, a proxy that dropped it silently).
    const silence = 2 * this.config.heartbeatMs + 1000;
    let watchdog = setTimeout(() => controller.abort(), silence);
    const idOnly = new IdOnlyFrames();
    const reader = body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        clearTimeout(watchdog);
        watchdog = setTimeout(() => controller.abort(), silence);
        const text = decoder.decode(value, { stream: true });
        parser.feed(text);
        // After the parser: an id-only frame older than an event of the same chunk is then
        // dropped by the cursor comparison instead of moving the cursor back.
        for (const id of idOnly.feed(text)) this.host.frame({ type: ID_ONLY, id, data: "" });
      }
      return { kind: "ended", opened };
    } catch {
      return this.interrupted();
    } finally {
      clearTimeout(watchdog);
      reader.releaseLock();
      controller.abort();
    }
  }
}

async function errorCode(response: Response): Promise<string> {
  try {
    const body: unknown = await response.json();
    if (typeof body === "object" && body !== null && "code" in body && typeof body.code === "string") {
      return body.code;
    }
  } catch {
    // Not JSON (e.g. a proxy's HTML page): the status says enough.
  }
  return `http_${response.status}`;
}
