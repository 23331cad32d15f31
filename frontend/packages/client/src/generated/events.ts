/* eslint-disable */
/**
 * Generated from schema/taskstream-events.schema.json by frontend/scripts/gen-types.mjs.
 * Do not edit: change the schema and run `npm run gen:types` in frontend/.
 */

/**
 * Every Taskstream event: task events (Kafka record value = SSE data) and the stream-control payloads. Contract: docs/events.md.
 */
export type TaskstreamEvents = TaskEvent | StreamOpen | StreamReset | Heartbeat;
/**
 * Any task event: the Kafka record value and the SSE data of a task.* event.
 */
export type TaskEvent = TaskStarted | TaskProgress | TaskSucceeded | TaskFailed | TaskCancelled;

/**
 * The worker began the task; status becomes running.
 */
export interface TaskStarted {
  /**
   * Unique per event; a repeat is a producer retry.
   */
  event_id: string;
  event_type: "task.started";
  /**
   * Schema version; 1 is the only one.
   */
  version: 1;
  /**
   * When the worker observed it (ISO-8601 with a time zone).
   */
  occurred_at: string;
  /**
   * The task's owner.
   */
  user_id: number;
  task_id: string;
  scope: "user";
  data: TaskStartedData;
}
export interface TaskStartedData {
  [k: string]: unknown | undefined;
}
/**
 * Progress of a running task.
 */
export interface TaskProgress {
  /**
   * Unique per event; a repeat is a producer retry.
   */
  event_id: string;
  event_type: "task.progress";
  /**
   * Schema version; 1 is the only one.
   */
  version: 1;
  /**
   * When the worker observed it (ISO-8601 with a time zone).
   */
  occurred_at: string;
  /**
   * The task's owner.
   */
  user_id: number;
  task_id: string;
  scope: "user";
  data: TaskProgressData;
}
export interface TaskProgressData {
  progress: number;
  message?: string;
  [k: string]: unknown | undefined;
}
/**
 * The task finished; status succeeded, progress 100.
 */
export interface TaskSucceeded {
  /**
   * Unique per event; a repeat is a producer retry.
   */
  event_id: string;
  event_type: "task.succeeded";
  /**
   * Schema version; 1 is the only one.
   */
  version: 1;
  /**
   * When the worker observed it (ISO-8601 with a time zone).
   */
  occurred_at: string;
  /**
   * The task's owner.
   */
  user_id: number;
  task_id: string;
  scope: "user";
  data: TaskSucceededData;
}
/**
 * `result` is any JSON value, or absent.
 */
export interface TaskSucceededData {
  result?: unknown;
  [k: string]: unknown | undefined;
}
/**
 * The task failed; status failed.
 */
export interface TaskFailed {
  /**
   * Unique per event; a repeat is a producer retry.
   */
  event_id: string;
  event_type: "task.failed";
  /**
   * Schema version; 1 is the only one.
   */
  version: 1;
  /**
   * When the worker observed it (ISO-8601 with a time zone).
   */
  occurred_at: string;
  /**
   * The task's owner.
   */
  user_id: number;
  task_id: string;
  scope: "user";
  data: TaskFailedData;
}
export interface TaskFailedData {
  error: string;
  [k: string]: unknown | undefined;
}
/**
 * The task was cancelled; status cancelled.
 */
export interface TaskCancelled {
  /**
   * Unique per event; a repeat is a producer retry.
   */
  event_id: string;
  event_type: "task.cancelled";
  /**
   * Schema version; 1 is the only one.
   */
  version: 1;
  /**
   * When the worker observed it (ISO-8601 with a time zone).
   */
  occurred_at: string;
  /**
   * The task's owner.
   */
  user_id: number;
  task_id: string;
  scope: "user";
  data: TaskCancelledData;
}
export interface TaskCancelledData {
  reason?: string;
  [k: string]: unknown | undefined;
}
/**
 * SSE data of `stream-open`, the first frame of every stream.
 */
export interface StreamOpen {
  user_id: number;
}
/**
 * SSE data of `stream-reset`: the requested cursor could not be honoured.
 */
export interface StreamReset {
  reason: "epoch-changed" | "cursor-expired" | "replay-limit" | "cursor-ahead";
  /**
   * The cursor the client sent.
   */
  requested: string;
  /**
   * `earliest`, or the cursor the stream resumes after.
   */
  resumed_from: string;
}
/**
 * SSE data of `heartbeat`, sent after an idle interval.
 */
export interface Heartbeat {
  /**
   * Server time, unix seconds.
   */
  t: number;
}
