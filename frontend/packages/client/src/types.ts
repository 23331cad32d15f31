import type * as Events from "./generated/events.js";

export type {
  Heartbeat,
  StreamOpen,
  StreamReset,
  TaskCancelled,
  TaskEvent,
  TaskFailed,
  TaskProgress,
  TaskStarted,
  TaskSucceeded,
} from "./generated/events.js";

/** The SSE `event:` names of task events; each is also the envelope's `event_type`. */
export type TaskEventType = Events.TaskEvent["event_type"];

/** Every named event a stream carries, with the type of its `data`. */
export interface StreamEventMap {
  "task.started": Events.TaskStarted;
  "task.progress": Events.TaskProgress;
  "task.succeeded": Events.TaskSucceeded;
  "task.failed": Events.TaskFailed;
  "task.cancelled": Events.TaskCancelled;
  "stream-open": Events.StreamOpen;
  "stream-reset": ResetInfo;
  heartbeat: Events.Heartbeat;
}
export type StreamEventType = keyof StreamEventMap;

/**
 * Why the client dropped its cursor. The server's `stream-reset` reasons, plus two the client
 * infers from a refusal of its cursor before any stream bytes (400 `bad_cursor`, 403
 * `source_forbidden`): in every case the page's state may be stale and should be refetched.
 */
export type ResetInfo =
  | Events.StreamReset
  | { reason: "bad-cursor" | "source-forbidden"; requested: string; resumed_from: "head" };

/**
 * - `idle`: not started. `connecting`: a request is in flight. `open`: `stream-open` arrived.
 * - `reconnecting`: waiting (backoff) before the next attempt; see `nextRetryAt`.
 * - `throttled`: the server answered 429; waiting at least its `Retry-After`.
 * - `offline`: the browser reports no network; the next `online` reconnects at once.
 * - `unauthorized`: a 401 persisted after a refresh, or the refresh said the session is over.
 *   The client stopped; call `reconnect()` after the user signs in again.
 * - `closed`: `close()` was called.
 */
export type ConnectionState =
  | "idle"
  | "connecting"
  | "open"
  | "reconnecting"
  | "throttled"
  | "offline"
  | "unauthorized"
  | "closed";

/**
 * `leader`: this tab holds the browser's one stream and relays it to the others.
 * `follower`: another tab's stream feeds this one. `solo`: a stream of its own (no Web Locks
 * or BroadcastChannel, or sharing turned off).
 */
export type Role = "leader" | "follower" | "solo";

export interface Snapshot {
  readonly state: ConnectionState;
  readonly role: Role | null;
  /** The resume cursor: the `id:` of the last event this tab applied. */
  readonly cursor: string | null;
  /** When the next attempt starts (epoch milliseconds), while waiting to reconnect. */
  readonly nextRetryAt: number | null;
  /** The last refusal or failure, e.g. `{status: 429, code: "too_many_streams"}`. */
  readonly lastError: { readonly status: number; readonly code: string } | null;
}

/** What a page knows about one task, folded from its events. */
export interface TaskState {
  readonly taskId: string;
  readonly status: "running" | "succeeded" | "failed" | "cancelled";
  readonly progress: number;
  readonly message: string | null;
  readonly result: unknown;
  readonly error: string | null;
  readonly lastEvent: Events.TaskEvent;
}

/** The subset of the Web Locks API the client uses (`navigator.locks`). */
export interface LockManagerLike {
  request(
    name: string,
    options: { signal?: AbortSignal },
    callback: (lock: unknown) => Promise<void>,
  ): Promise<unknown>;
}

/** The subset of BroadcastChannel the client uses. */
export interface ChannelLike {
  postMessage(message: unknown): void;
  onmessage: ((event: MessageEvent) => void) | null;
  close(): void;
}

export type Auth =
  | {
      /**
       * The stream authenticates with the HttpOnly cookie set by `POST /api/v1/auth/cookie/`
       * (`credentials: 'include'`). `refresh` renews it after a 401: get a new access token and
       * POST it to the cookie endpoint. Throw `UnauthorizedError` when the session is over.
       */
      mode: "cookie";
      refresh?: () => Promise<void>;
    }
  | {
      /**
       * The stream sends `Authorization: Bearer <token>`. `getToken` is called before every
       * attempt (so a token is never stale on a reconnect) with `forceRefresh: true` once after
       * a 401. Throw `UnauthorizedError` when the session is over.
       */
      mode: "bearer";
      getToken: (options: { forceRefresh: boolean }) => string | null | Promise<string | null>;
    };

export interface TaskstreamOptions {
  /** The stream URL. Default `/api/v1/events/stream` (same origin). */
  url?: string;
  /** Default: cookie mode without a refresh (a 401 then ends in `unauthorized`). */
  auth?: Auth;
  /** A cursor to start from, e.g. a task's `last_event_id` from the API. */
  initialCursor?: string | null;
  /**
   * For a page with a time but no cursor (server-rendered, cached): while the client has no
   * cursor, the stream starts with the user's events at or after this time (`?since=`,
   * docs/events.md). Once an event has been applied its cursor is used instead.
   */
  since?: Date | string | null;
  /** First backoff step; each failure doubles the ceiling. Default 1000 ms. */
  minRetryMs?: number;
  /** Ceiling of the backoff. Default 30000 ms. */
  maxRetryMs?: number;
  /** The server's `TASKSTREAM_HEARTBEAT_SECONDS`; two silent intervals end the stream. Default 15000. */
  heartbeatMs?: number;
  /** One stream per browser (Web Locks + BroadcastChannel). Default true. */
  shareAcrossTabs?: boolean;
  /** Names the lock and channel; tabs with the same key share a stream. Default: the URL. */
  shareKey?: string;
  /** Injection points for tests and unusual hosts; default to the browser's. */
  fetch?: typeof fetch;
  locks?: LockManagerLike | null;
  createChannel?: ((name: string) => ChannelLike) | null;
  random?: () => number;
  /** Window-like target for online/offline/visibilitychange/pageshow. Default `window`. */
  eventTarget?: EventTarget | null;
}
