/**
 * Test doubles: a fetch whose answers the test scripts (streams it can push SSE text into),
 * an in-memory Web Locks manager, and an in-memory BroadcastChannel.
 */
import type { ChannelLike, LockManagerLike } from "../src/types.js";

export interface Request {
  url: string;
  headers: Record<string, string>;
  credentials: RequestCredentials | undefined;
  signal: AbortSignal | undefined;
}

export class SSEStream {
  private controller!: ReadableStreamDefaultController<Uint8Array>;
  private readonly encoder = new TextEncoder();
  closed = false;
  readonly body = new ReadableStream<Uint8Array>({
    start: (controller) => {
      this.controller = controller;
    },
    cancel: () => {
      this.closed = true;
    },
  });

  push(text: string): void {
    if (!this.closed) this.controller.enqueue(this.encoder.encode(text));
  }

  /** The connection broke (or the client aborted it). */
  abort(): void {
    if (this.closed) return;
    this.closed = true;
    this.controller.error(new DOMException("aborted", "AbortError"));
  }

  end(): void {
    if (this.closed) return;
    this.closed = true;
    this.controller.close();
  }
}

type Answer = (request: Request) => Response | Promise<Response>;

/** A scripted fetch: each call takes the next answer, or waits until the test gives one. */
export class FakeFetch {
  readonly requests: Request[] = [];
  readonly streams: SSEStream[] = [];
  private readonly answers: Answer[] = [];
  private readonly waiting: Array<(answer: Answer) => void> = [];

  readonly fetch = (async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const request: Request = {
      url: String(input),
      headers: { ...(init?.headers as Record<string, string> | undefined) },
      credentials: init?.credentials,
      signal: init?.signal ?? undefined,
    };
    this.requests.push(request);
    const answer =
      this.answers.shift() ?? (await new Promise<Answer>((resolve) => this.waiting.push(resolve)));
    const signal = request.signal;
    if (signal?.aborted) throw new DOMException("aborted", "AbortError");
    const response = await answer(request);
    return response;
  }) as typeof fetch;

  answer(answer: Answer): void {
    const waiter = this.waiting.shift();
    if (waiter !== undefined) waiter(answer);
    else this.answers.push(answer);
  }

  /** Answer with a 200 event stream and return it, to push frames into. */
  stream(): SSEStream {
    const stream = new SSEStream();
    this.streams.push(stream);
    this.answer((request) => {
      request.signal?.addEventListener("abort", () => stream.abort());
      return new Response(stream.body, {
        status: 200,
        headers: { "content-type": "text/event-stream; charset=utf-8" },
      });
    });
    return stream;
  }

  refuse(status: number, code: string, headers: Record<string, string> = {}): void {
    this.answer(
      () =>
        new Response(JSON.stringify({ detail: code, code }), {
          status,
          headers: { "content-type": "application/json", ...headers },
        }),
    );
  }

  fail(): void {
    this.answer(() => {
      throw new TypeError("Failed to fetch");
    });
  }
}

export function frame(event: string, data: unknown, id?: string): string {
  return `${id === undefined ? "" : `id: ${id}\n`}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

export const OPEN = "retry: 3000\n: taskstream\n\n" + frame("stream-open", { user_id: 1 });

export const TASK = "577e3e53-7a57-4772-b1d9-1c068f126ac9";

export function cursor(offset: number, epoch = "E1"): string {
  return `task.events:2:${offset}@${epoch}`;
}

export function progress(offset: number, value: number, task = TASK): string {
  return frame(
    "task.progress",
    {
      event_id: `00000000-0000-4000-8000-${String(offset).padStart(12, "0")}`,
      event_type: "task.progress",
      version: 1,
      occurred_at: "2026-11-30T10:00:00+00:00",
      user_id: 1,
      task_id: task,
      scope: "user",
      data: { progress: value, message: `step ${value}` },
    },
    cursor(offset),
  );
}

/** Web Locks semantics the client relies on: exclusive, FIFO, released when the callback's
 * promise settles, and a waiting request abortable by its signal. */
export class FakeLocks implements LockManagerLike {
  private readonly held = new Set<string>();
  private readonly queues = new Map<string, Array<() => void>>();

  request(
    name: string,
    options: { signal?: AbortSignal },
    callback: (lock: unknown) => Promise<void>,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const run = (): void => {
        this.held.add(name);
        Promise.resolve()
          .then(() => callback({ name }))
          .then(resolve, reject)
          .finally(() => {
            this.held.delete(name);
            this.queues.get(name)?.shift()?.();
          });
      };
      if (!this.held.has(name)) {
        run();
        return;
      }
      const queue = this.queues.get(name) ?? [];
      this.queues.set(name, queue);
      queue.push(run);
      options.signal?.addEventListener("abort", () => {
        const index = queue.indexOf(run);
        if (index >= 0) queue.splice(index, 1);
        reject(new DOMException("aborted", "AbortError"));
      });
    });
  }
}

/** BroadcastChannel within one test: delivered asynchronously to every other channel of the name. */
export class FakeBus {
  private readonly channels = new Set<FakeChannel>();
  readonly create = (name: string): ChannelLike => {
    const channel = new FakeChannel(name, this);
    this.channels.add(channel);
    return channel;
  };

  deliver(from: FakeChannel, message: unknown): void {
    const copy = structuredClone(message);
    for (const channel of this.channels) {
      if (channel !== from && channel.name === from.name) {
        queueMicrotask(() => channel.onmessage?.({ data: copy } as MessageEvent));
      }
    }
  }

  remove(channel: FakeChannel): void {
    this.channels.delete(channel);
  }
}

class FakeChannel implements ChannelLike {
  onmessage: ((event: MessageEvent) => void) | null = null;
  constructor(
    readonly name: string,
    private readonly bus: FakeBus,
  ) {}
  postMessage(message: unknown): void {
    this.bus.deliver(this, message);
  }
  close(): void {
    this.bus.remove(this);
  }
}
