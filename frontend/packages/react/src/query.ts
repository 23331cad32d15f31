/**
 * Keep a TanStack Query cache in step with the stream: events update cached tasks in place
 * (their envelope carries the new state, so no refetch is needed), and a reset invalidates,
 * since after one the page cannot know what it missed.
 */
import type { QueryClient, QueryKey } from "@tanstack/query-core";
import {
  type TaskEvent,
  type TaskState,
  type TaskstreamClient,
  applyTaskEvent,
} from "@taskstream/client";

/** The task fields of the REST API (`GET /api/v1/tasks/{id}/`) that events change. */
export interface ApiTask {
  id: string;
  status: string;
  progress: number;
  [field: string]: unknown;
}

export interface QuerySyncOptions {
  /** Queries holding API tasks (a task, a list, or a page `{results: [...]}`). Default `['tasks']`. */
  taskKeys?: QueryKey[];
  /** Invalidated after a reset. Default: every query. */
  resetKeys?: QueryKey[];
  /** Replace the default in-place update, e.g. to invalidate instead. */
  onEvent?: (event: TaskEvent, queryClient: QueryClient) => void;
}

/** Start syncing; returns the function that stops it. */
export function syncQueryClient(
  client: TaskstreamClient,
  queryClient: QueryClient,
  options: QuerySyncOptions = {},
): () => void {
  const taskKeys = options.taskKeys ?? [["tasks"]];
  const onEvent =
    options.onEvent ??
    ((event: TaskEvent) => {
      for (const queryKey of taskKeys) {
        queryClient.setQueriesData({ queryKey }, (data: unknown) => patchTasks(data, event));
      }
    });
  const stopEvents = client.subscribe("*", (event) => onEvent(event, queryClient));
  const stopReset = client.onReset(() => {
    // Cancel first: a fetch already in flight started before the reset, and TanStack would
    // hand its answer to the invalidation instead of fetching again when the query has no
    // data yet (a page's first load racing the stream's reset).
    const refetch = async (filters: { queryKey?: QueryKey }): Promise<void> => {
      await queryClient.cancelQueries(filters);
      await queryClient.invalidateQueries(filters);
    };
    if (options.resetKeys === undefined) {
      void refetch({});
      return;
    }
    for (const queryKey of options.resetKeys) void refetch({ queryKey });
  });
  return () => {
    stopEvents();
    stopReset();
  };
}

/** Apply one event to cached API data of any of the shapes above; same object when unchanged. */
export function patchTasks(data: unknown, event: TaskEvent): unknown {
  if (Array.isArray(data)) {
    let changed = false;
    const next = data.map((item: unknown) => {
      const patched = patchTasks(item, event);
      if (patched !== item) changed = true;
      return patched;
    });
    return changed ? next : data;
  }
  if (typeof data !== "object" || data === null) return data;
  if ("results" in data && Array.isArray(data.results)) {
    const results = patchTasks(data.results, event);
    return results === data.results ? data : { ...data, results };
  }
  if (isApiTask(data) && data.id === event.task_id) return patchTask(data, event);
  return data;
}

function isApiTask(value: object): value is ApiTask {
  return "id" in value && "status" in value && "progress" in value;
}

function patchTask(task: ApiTask, event: TaskEvent): ApiTask {
  const previous = {
    taskId: task.id,
    // Treat a not-yet-started API task as running: the first event moves it on anyway.
    status: (task.status === "pending" ? "running" : task.status) as TaskState["status"],
    progress: task.progress,
    message: typeof task.message === "string" ? task.message : null,
    result: task.result,
    error: typeof task.error === "string" ? task.error : null,
    lastEvent: event,
  };
  const state = applyTaskEvent(previous, event);
  if (state === previous) return task;
  return {
    ...task,
    status: state.status,
    progress: state.progress,
    message: state.message ?? task.message,
    ...(state.status === "succeeded" ? { result: state.result } : {}),
    ...(state.error !== null ? { error: state.error } : {}),
  };
}
