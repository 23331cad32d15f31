export { TaskstreamClient, DEFAULT_STREAM_URL } from "./client.js";
export { UnauthorizedError } from "./stream.js";
export type { Frame } from "./stream.js";
export { applyTaskEvent, isFinal, parseTaskEvent } from "./tasks.js";
export { isAfter } from "./cursor.js";
export { backoffDelay, parseRetryAfter } from "./backoff.js";
export type * from "./types.js";
