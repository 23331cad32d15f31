/* eslint-disable */
/**
 * Generated from schema/taskstream-events.schema.json by frontend/scripts/gen-types.mjs.
 * Do not edit: change the schema and run `npm run gen:types` in frontend/.
 */

/**
 * Every event a Taskstream stream carries; generated from streaming/schema.py.
 */
export type TaskstreamEvents = TaskEvent | StreamOpen | StreamReset | Heartbeat;
/**
 * Any task event: the Kafka record value and the SSE data of task.*.
 */
export type TaskEvent = TaskStarted | TaskProgress | TaskSucceeded | TaskFailed | TaskCancelled;
/**
 * unique per event; a repeat is a producer retry
 */
export type EventId = string;
export type EventType = "task.started";
export type OccurredAt = string;
export type Scope = "user";
export type TaskId = string;
/**
 * W3C trace context of the record that carried the event (its `traceparent` header); only in the SSE data, when the record had a valid one
 */
export type Traceparent = string;
/**
 * the task's owner
 */
export type UserId = number;
export type Version = 1;
/**
 * for the user; the task keeps the first 500 characters
 */
export type Message = string;
/**
 * percent done
 */
export type Progress = number;
/**
 * unique per event; a repeat is a producer retry
 */
export type EventId1 = string;
export type EventType1 = "task.progress";
export type OccurredAt1 = string;
export type Scope1 = "user";
export type TaskId1 = string;
/**
 * W3C trace context of the record that carried the event (its `traceparent` header); only in the SSE data, when the record had a valid one
 */
export type Traceparent1 = string;
/**
 * the task's owner
 */
export type UserId1 = number;
export type Version1 = 1;
/**
 * unique per event; a repeat is a producer retry
 */
export type EventId2 = string;
export type EventType2 = "task.succeeded";
export type OccurredAt2 = string;
export type Scope2 = "user";
export type TaskId2 = string;
/**
 * W3C trace context of the record that carried the event (its `traceparent` header); only in the SSE data, when the record had a valid one
 */
export type Traceparent2 = string;
/**
 * the task's owner
 */
export type UserId2 = number;
export type Version2 = 1;
/**
 * why the task failed, for the user
 */
export type Error = string;
/**
 * unique per event; a repeat is a producer retry
 */
export type EventId3 = string;
export type EventType3 = "task.failed";
export type OccurredAt3 = string;
export type Scope3 = "user";
export type TaskId3 = string;
/**
 * W3C trace context of the record that carried the event (its `traceparent` header); only in the SSE data, when the record had a valid one
 */
export type Traceparent3 = string;
/**
 * the task's owner
 */
export type UserId3 = number;
export type Version3 = 1;
export type Reason = string;
/**
 * unique per event; a repeat is a producer retry
 */
export type EventId4 = string;
export type EventType4 = "task.cancelled";
export type OccurredAt4 = string;
export type Scope4 = "user";
export type TaskId4 = string;
/**
 * W3C trace context of the record that carried the event (its `traceparent` header); only in the SSE data, when the record had a valid one
 */
export type Traceparent4 = string;
/**
 * the task's owner
 */
export type UserId4 = number;
export type Version4 = 1;
/**
 * sent only by the staff scope (docs/events.md)
 */
export type Scope5 = "user" | "staff";
/**
 * who opened the stream
 */
export type UserId5 = number;
export type Reason1 =
  "epoch-changed" | "cursor-expired" | "replay-limit" | "cursor-ahead" | "live-only";
export type Requested = string;
export type ResumedFrom = string;
export type T = number;

export interface TaskStarted {
  data: TaskStartedData;
  event_id: EventId;
  event_type: EventType;
  occurred_at: OccurredAt;
  scope: Scope;
  task_id: TaskId;
  traceparent?: Traceparent;
  user_id: UserId;
  version: Version;
}
/**
 * ``task.started``: no fields of its own.
 */
export interface TaskStartedData {
  [k: string]: unknown | undefined;
}
export interface TaskProgress {
  data: TaskProgressData;
  event_id: EventId1;
  event_type: EventType1;
  occurred_at: OccurredAt1;
  scope: Scope1;
  task_id: TaskId1;
  traceparent?: Traceparent1;
  user_id: UserId1;
  version: Version1;
}
export interface TaskProgressData {
  message?: Message;
  progress: Progress;
  [k: string]: unknown | undefined;
}
export interface TaskSucceeded {
  data: TaskSucceededData;
  event_id: EventId2;
  event_type: EventType2;
  occurred_at: OccurredAt2;
  scope: Scope2;
  task_id: TaskId2;
  traceparent?: Traceparent2;
  user_id: UserId2;
  version: Version2;
}
export interface TaskSucceededData {
  /**
   * any JSON the task returns
   */
  result?: {
    [k: string]: unknown | undefined;
  };
  [k: string]: unknown | undefined;
}
export interface TaskFailed {
  data: TaskFailedData;
  event_id: EventId3;
  event_type: EventType3;
  occurred_at: OccurredAt3;
  scope: Scope3;
  task_id: TaskId3;
  traceparent?: Traceparent3;
  user_id: UserId3;
  version: Version3;
}
export interface TaskFailedData {
  error: Error;
  [k: string]: unknown | undefined;
}
export interface TaskCancelled {
  data: TaskCancelledData;
  event_id: EventId4;
  event_type: EventType4;
  occurred_at: OccurredAt4;
  scope: Scope4;
  task_id: TaskId4;
  traceparent?: Traceparent4;
  user_id: UserId4;
  version: Version4;
}
export interface TaskCancelledData {
  reason?: Reason;
  [k: string]: unknown | undefined;
}
/**
 * ``stream-open``: the first event of every stream.
 */
export interface StreamOpen {
  scope?: Scope5;
  user_id: UserId5;
}
/**
 * ``stream-reset``: the requested cursor was not honoured (docs/events.md, "Resuming").
 */
export interface StreamReset {
  reason: Reason1;
  requested: Requested;
  resumed_from: ResumedFrom;
}
/**
 * ``heartbeat``: the stream is alive; ``t`` is the server's Unix time.
 */
export interface Heartbeat {
  t: T;
}
