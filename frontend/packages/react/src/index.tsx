/**
 * React bindings: one TaskstreamClient per provider, read through useSyncExternalStore so a
 * render never sees a torn state and components re-render only for what they read.
 */
import {
  type ReactNode,
  createContext,
  useCallback,
  useContext,
  useEffect,
  useRef,
  useState,
  useSyncExternalStore,
} from "react";
import {
  type Snapshot,
  type StreamEventMap,
  type StreamEventType,
  type TaskState,
  TaskstreamClient,
  type TaskstreamOptions,
} from "@taskstream/client";

const ClientContext = createContext<TaskstreamClient | null>(null);

export type TaskstreamProviderProps =
  | { client: TaskstreamClient; options?: never; children?: ReactNode }
  | { client?: never; options?: TaskstreamOptions; children?: ReactNode };

/**
 * Starts the stream while mounted. Pass a `client` you created (to share it with non-React
 * code, e.g. a query client helper), or `options` and the provider creates one.
 */
export function TaskstreamProvider(props: TaskstreamProviderProps): ReactNode {
  const options = useRef(props.options);
  const [owned, setOwned] = useState(() =>
    props.client === undefined ? new TaskstreamClient(props.options ?? {}) : null,
  );
  const client = props.client ?? owned;
  if (client === null) throw new Error("TaskstreamProvider: no client");
  useEffect(() => {
    if (owned === null) {
      // A client passed in belongs to the caller, who closes it.
      client.start();
      return undefined;
    }
    if (owned.getSnapshot().state === "closed") {
      // Unmounted and mounted again (StrictMode does this in development): a closed client
      // cannot restart, so make a new one; the effect runs again with it.
      setOwned(new TaskstreamClient(options.current ?? {}));
      return undefined;
    }
    owned.start();
    // Closing hands this tab's leader lock to another tab.
    return () => owned.close();
  }, [client, owned]);
  return <ClientContext.Provider value={client}>{props.children}</ClientContext.Provider>;
}

export function useTaskstreamClient(): TaskstreamClient {
  const client = useContext(ClientContext);
  if (client === null) throw new Error("Taskstream hooks need a <TaskstreamProvider> above them");
  return client;
}

/** Connection state, role, cursor and next retry time; re-renders when any of them changes. */
export function useTaskstreamStatus(): Snapshot {
  const client = useTaskstreamClient();
  return useSyncExternalStore(client.onSnapshot, client.getSnapshot, client.getSnapshot);
}

/** What the stream says about one task (undefined before its first event, or after a reset). */
export function useTask(taskId: string): TaskState | undefined {
  const client = useTaskstreamClient();
  const subscribe = useCallback(
    (onChange: () => void) => client.onTask(taskId, onChange),
    [client, taskId],
  );
  const get = useCallback(() => client.getTask(taskId), [client, taskId]);
  return useSyncExternalStore(subscribe, get, get);
}

/**
 * Run `handler` for each event of `type` (e.g. `'stream-reset'`, `'task.failed'`). The latest
 * handler is called without re-subscribing, so an inline arrow function is fine.
 */
export function useTaskstreamEvent<K extends StreamEventType>(
  type: K,
  handler: (data: StreamEventMap[K]) => void,
): void {
  const client = useTaskstreamClient();
  const latest = useRef(handler);
  useEffect(() => {
    latest.current = handler;
  });
  useEffect(() => client.on(type, (data) => latest.current(data)), [client, type]);
}

export type { Snapshot, TaskState, TaskstreamOptions } from "@taskstream/client";
export { TaskstreamClient } from "@taskstream/client";
