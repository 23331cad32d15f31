/**
 * The browser's one Taskstream stream, shared by its tabs.
 *
 * The server caps streams per user (5 by default), so a stream per tab fails at the sixth tab.
 * Tabs elect a leader with Web Locks: the lock is released when its holder closes or crashes,
 * so the next waiting tab takes over without any timeout scheme. The leader's stream feeds the
 * other tabs over BroadcastChannel; every tab applies each event at most once, by cursor, so the
 * new leader resumes with its own Last-Event-ID and nobody sees a gap or a duplicate.
 */
import { isAfter } from "./cursor.js";
import { type Frame, StreamLoop, UnauthorizedError } from "./stream.js";
import { applyTaskEvent, parseTaskEvent } from "./tasks.js";
import type {
  Auth,
  ChannelLike,
  LockManagerLike,
  ResetInfo,
  Role,
  Snapshot,
  StreamEventMap,
  StreamEventType,
  TaskEvent,
  TaskState,
  TaskstreamOptions,
} from "./types.js";

export const DEFAULT_STREAM_URL = "/api/v1/events/stream";

type Message =
  | { kind: "frame"; frame: Frame }
  | { kind: "state"; snapshot: Pick<Snapshot, "state" | "nextRetryAt" | "lastError" | "cursor"> }
  | { kind: "reset"; info: ResetInfo }
  | { kind: "hello" }
  | { kind: "reconnect" };

type Listener<T> = (value: T) => void;

function defaultLocks(): LockManagerLike | null {
  if (typeof navigator === "undefined") return null;
  const locks = (navigator as { locks?: LockManagerLike }).locks;
  return locks ?? null;
}

function defaultChannel(): ((name: string) => ChannelLike) | null {
  if (typeof BroadcastChannel === "undefined") return null;
  return (name) => new BroadcastChannel(name);
}

export class TaskstreamClient {
  private snapshot: Snapshot = {
    state: "idle",
    role: null,
    cursor: null,
    nextRetryAt: null,
    lastError: null,
  };
  private readonly tasks = new Map<string, TaskState>();
  private readonly eventListeners = new Map<string, Set<Listener<TaskEvent>>>();
  private readonly typeListeners = new Map<string, Set<Listener<never>>>();
  private readonly taskStateListeners = new Map<string, Set<() => void>>();
  private readonly snapshotListeners = new Set<() => void>();
  private readonly resetListeners = new Set<Listener<ResetInfo>>();
  private readonly auth: Auth;
  private readonly url: string;
  private readonly since: string | null;
  private readonly locks: LockManagerLike | null;
  private readonly createChannel: ((name: string) => ChannelLike) | null;
  private channel: ChannelLike | null = null;
  private loop: StreamLoop | null = null;
  private started = false;
  private closed = false;
  private readonly lifetime = new AbortController();
  private releaseLock: (() => void) | null = null;
  private refreshing: Promise<void> | null = null;

  constructor(private readonly options: TaskstreamOptions = {}) {
    this.url = options.url ?? DEFAULT_STREAM_URL;
    this.since = sinceText(options.since ?? null);
    this.auth = options.auth ?? { mode: "cookie" };
    this.locks = options.locks === undefined ? defaultLocks() : options.locks;
    this.createChannel =
      options.createChannel === undefined ? defaultChannel() : options.createChannel;
    if (options.initialCursor) this.snapshot = { ...this.snapshot, cursor: options.initialCursor };
  }

  /** Start streaming (as leader, follower or solo). Idempotent. */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    const share = this.options.shareAcrossTabs ?? true;
    if (!share || this.locks === null || this.createChannel === null) {
      // Without Web Locks a crashed leader could never be replaced: one stream per tab.
      this.setSnapshot({ role: "solo" });
      this.lead();
      return;
    }
    const key = `taskstream:${this.options.shareKey ?? this.absoluteUrl()}`;
    this.channel = this.createChannel(key);
    this.channel.onmessage = (event: MessageEvent) => this.receive(event.data as Message);
    this.setSnapshot({ role: "follower" });
    this.post({ kind: "hello" });
    this.locks
      .request(key, { signal: this.lifetime.signal }, () => {
        if (this.closed) return Promise.resolve();
        this.setSnapshot({ role: "leader" });
        this.lead();
        // Held until close(); the browser releases it if the tab dies.
        return new Promise<void>((resolve) => {
          this.releaseLock = resolve;
        });
      })
      .catch(() => {
        // Aborted by close() while still waiting for the lock.
      });
  }

  /** Stop for good: aborts the stream and, as leader, hands it to another tab. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.loop?.stop();
    this.loop = null;
    this.lifetime.abort();
    this.releaseLock?.();
    this.channel?.close();
    this.channel = null;
    this.setSnapshot({ state: "closed", nextRetryAt: null });
  }

  /**
   * Try again now: after the user signed in again (from `unauthorized`), or to skip a backoff
   * wait. A follower asks the leader.
   */
  reconnect(): void {
    if (this.loop !== null) this.loop.reconnectNow();
    else this.post({ kind: "reconnect" });
  }

  /**
   * Renew the credential once, whoever asks: the stream after a 401, or the page's own API call
   * after one. Concurrent callers share the same refresh.
   */
  refreshAuth(): Promise<void> {
    if (this.refreshing === null) {
      const auth = this.auth;
      const run =
        auth.mode === "cookie"
          ? auth.refresh ??
            (() => Promise.reject(new UnauthorizedError("no refresh configured")))
          : async () => {
              await auth.getToken({ forceRefresh: true });
            };
      this.refreshing = run().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  getSnapshot = (): Snapshot => this.snapshot;

  /** Notified whenever `getSnapshot()` changes (the `subscribe` of useSyncExternalStore). */
  onSnapshot = (listener: () => void): (() => void) => {
    this.snapshotListeners.add(listener);
    return () => this.snapshotListeners.delete(listener);
  };

  /** Task events of one task, or of every task with `'*'`. */
  subscribe(taskId: string | "*", listener: Listener<TaskEvent>): () => void {
    return addTo(this.eventListeners, taskId, listener);
  }

  /** Any named event, with its typed data: `on('stream-reset', info => …)`, `on('heartbeat', …)`. */
  on<K extends StreamEventType>(type: K, listener: Listener<StreamEventMap[K]>): () => void {
    return addTo(this.typeListeners, type, listener as Listener<never>);
  }

  /** The stream lost continuity: refetch what the page shows (see also the query helper). */
  onReset(listener: Listener<ResetInfo>): () => void {
    this.resetListeners.add(listener);
    return () => this.resetListeners.delete(listener);
  }

  /** What this tab's events say about a task; undefined before any event (or after a reset). */
  getTask(taskId: string): TaskState | undefined {
    return this.tasks.get(taskId);
  }

  /** Notified when `getTask(taskId)` changes. */
  onTask(taskId: string, listener: () => void): () => void {
    return addTo(this.taskStateListeners, taskId, listener);
  }

  // --- leading ------------------------------------------------------------------------

  private lead(): void {
    this.loop = new StreamLoop(
      {
        url: this.url,
        since: this.since,
        auth: this.auth,
        minRetryMs: this.options.minRetryMs ?? 1000,
        maxRetryMs: this.options.maxRetryMs ?? 30000,
        heartbeatMs: this.options.heartbeatMs ?? 15000,
        fetch: this.options.fetch ?? ((input, init) => fetch(input, init)),
        random: this.options.random ?? Math.random,
        eventTarget:
          this.options.eventTarget === undefined
            ? typeof window === "undefined"
              ? null
              : window
            : this.options.eventTarget,
        refresh: () => this.refreshAuth(),
      },
      {
        cursor: () => this.snapshot.cursor,
        frame: (frame) => {
          // Relay everything, also what this tab drops as already applied: another tab may
          // still lack it, and each tab dedupes by cursor itself.
          this.post({ kind: "frame", frame });
          this.apply(frame);
        },
        cursorRefused: (info) => {
          this.post({ kind: "reset", info });
          this.reset(info);
        },
        status: (patch) => {
          this.setSnapshot(patch);
          this.broadcastState();
        },
      },
    );
    this.loop.start();
  }

  private broadcastState(): void {
    const { state, nextRetryAt, lastError, cursor } = this.snapshot;
    this.post({ kind: "state", snapshot: { state, nextRetryAt, lastError, cursor } });
  }

  private post(message: Message): void {
    try {
      this.channel?.postMessage(message);
    } catch {
      // A closed channel (the tab is going away): nothing left to tell.
    }
  }

  private receive(message: Message): void {
    if (this.closed) return;
    const leading = this.loop !== null;
    switch (message.kind) {
      case "frame":
        if (!leading) this.apply(message.frame);
        break;
      case "reset":
        if (!leading) this.reset(message.info);
        break;
      case "state":
        if (!leading) {
          const { state, nextRetryAt, lastError, cursor } = message.snapshot;
          // A tab that has applied nothing yet starts from the leader's position, so that it
          // resumes from there if it ever leads.
          const adopt = this.snapshot.cursor === null && cursor !== null;
          this.setSnapshot({ state, nextRetryAt, lastError, ...(adopt ? { cursor } : {}) });
        }
        break;
      case "hello":
        if (leading) this.broadcastState();
        break;
      case "reconnect":
        if (leading) this.loop?.reconnectNow();
        break;
    }
  }

  // --- applying events ----------------------------------------------------------------

  private apply(frame: Frame): void {
    if (frame.id !== null && !isAfter(frame.id, this.snapshot.cursor)) return;
    if (frame.type === "stream-reset") {
      const info = parseJson(frame.data);
      // Whatever its body, a reset means the cursor is void: act on it even if malformed.
      const valid = typeof info === "object" && info !== null && "reason" in info;
      this.reset(
        valid
          ? (info as ResetInfo)
          : { reason: "cursor-expired", requested: this.snapshot.cursor ?? "", resumed_from: "earliest" },
      );
      return;
    }
    const event = parseTaskEvent(frame.type, frame.data);
    if (frame.id !== null) this.setSnapshot({ cursor: frame.id });
    if (event !== null) {
      const previous = this.tasks.get(event.task_id);
      const next = applyTaskEvent(previous, event);
      if (next !== previous) {
        this.tasks.set(event.task_id, next);
        notify(this.taskStateListeners.get(event.task_id));
      }
      emit(this.eventListeners.get(event.task_id), event);
      emit(this.eventListeners.get("*"), event);
      emit(this.typeListeners.get(frame.type), event as never);
      return;
    }
    if (frame.type === "stream-open" || frame.type === "heartbeat") {
      const data = parseJson(frame.data);
      if (data !== null) emit(this.typeListeners.get(frame.type), data as never);
    }
  }

  private reset(info: ResetInfo): void {
    // The stream resumes from elsewhere: what this tab folded from events is no longer
    // known to be current, so it is forgotten and the page refetches (onReset).
    this.setSnapshot({ cursor: null });
    const known = [...this.tasks.keys()];
    this.tasks.clear();
    for (const taskId of known) notify(this.taskStateListeners.get(taskId));
    emit(this.resetListeners, info);
    emit(this.typeListeners.get("stream-reset"), info as never);
  }

  private setSnapshot(patch: Partial<Snapshot>): void {
    let changed = false;
    for (const [key, value] of Object.entries(patch)) {
      if (this.snapshot[key as keyof Snapshot] !== value) changed = true;
    }
    if (!changed) return;
    // A new object per change: useSyncExternalStore compares snapshots by identity.
    this.snapshot = { ...this.snapshot, ...patch };
    notify(this.snapshotListeners);
  }

  private absoluteUrl(): string {
    if (typeof location === "undefined") return this.url;
    return new URL(this.url, location.href).href;
  }
}

function addTo<T>(map: Map<string, Set<T>>, key: string, value: T): () => void {
  let set = map.get(key);
  if (set === undefined) {
    set = new Set();
    map.set(key, set);
  }
  set.add(value);
  return () => {
    set.delete(value);
    if (set.size === 0 && map.get(key) === set) map.delete(key);
  };
}

function emit<T>(listeners: Set<Listener<T>> | undefined, value: T): void {
  if (listeners === undefined) return;
  for (const listener of [...listeners]) {
    try {
      listener(value);
    } catch (error) {
      // One page listener's bug must not stop the stream or the other listeners.
      reportError(error);
    }
  }
}

function notify(listeners: Set<() => void> | undefined): void {
  if (listeners === undefined) return;
  for (const listener of [...listeners]) listener();
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  }
}

function reportError(error: unknown): void {
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else setTimeout(() => {
    throw error;
  });
}

export type { Role };

/** ``since`` as the server reads it; an invalid Date is the caller's bug, refused at once. */
function sinceText(since: Date | string | null): string | null {
  if (since === null || typeof since === "string") return since;
  if (Number.isNaN(since.getTime())) throw new RangeError("since: invalid Date");
  return since.toISOString();
}
