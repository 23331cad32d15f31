import type { TaskEvent, TaskState } from "./types.js";

const FINAL = new Set<TaskState["status"]>(["succeeded", "failed", "cancelled"]);

export function isFinal(status: string): boolean {
  return FINAL.has(status as TaskState["status"]);
}

/**
 * Fold one event into a task's state. A task in a final state does not change again, as on the
 * server (docs/events.md, "Event types"): a late or replayed progress event cannot revive it.
 */
export function applyTaskEvent(previous: TaskState | undefined, event: TaskEvent): TaskState {
  if (previous !== undefined && FINAL.has(previous.status)) return previous;
  const base = {
    taskId: event.task_id,
    progress: previous?.progress ?? 0,
    message: previous?.message ?? null,
    result: previous?.result,
    error: previous?.error ?? null,
    lastEvent: event,
  };
  switch (event.event_type) {
    case "task.started":
      return { ...base, status: "running" };
    case "task.progress":
      return {
        ...base,
        status: "running",
        progress: event.data.progress,
        message: event.data.message ?? base.message,
      };
    case "task.succeeded":
      return { ...base, status: "succeeded", progress: 100, result: event.data.result };
    case "task.failed":
      return { ...base, status: "failed", error: event.data.error };
    case "task.cancelled":
      return { ...base, status: "cancelled", message: event.data.reason ?? base.message };
  }
}

const TASK_TYPES = new Set<string>([
  "task.started",
  "task.progress",
  "task.succeeded",
  "task.failed",
  "task.cancelled",
]);

/**
 * The server validates records against the schema before they become events; this only makes
 * sure a frame is shaped like one, so a malformed frame (a proxy, a future type) is skipped
 * rather than crashing a listener.
 */
export function parseTaskEvent(type: string, data: string): TaskEvent | null {
  if (!TASK_TYPES.has(type)) return null;
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    return null;
  }
  if (
    typeof value !== "object" ||
    value === null ||
    !("event_type" in value) ||
    value.event_type !== type ||
    !("task_id" in value) ||
    typeof value.task_id !== "string" ||
    !("data" in value) ||
    typeof value.data !== "object" ||
    value.data === null
  ) {
    return null;
  }
  return value as TaskEvent;
}
