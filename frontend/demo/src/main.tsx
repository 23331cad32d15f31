/**
 * The demo page at `/`: log in, start demo tasks, watch them run. Built on @taskstream/react:
 * one stream for all the tabs of this browser, task list from TanStack Query kept in step with
 * the stream, live progress from useTask.
 */
import { QueryClient, QueryClientProvider, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { type TaskstreamOptions, TaskstreamClient, isFinal } from "@taskstream/client";
import {
  TaskstreamProvider,
  useTask,
  useTaskstreamClient,
  useTaskstreamEvent,
  useTaskstreamStatus,
} from "@taskstream/react";
import { syncQueryClient } from "@taskstream/react/query";
import { type FormEvent, type ReactNode, StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { type ApiTask, type TaskPage, api, hasSession, login, logout, refreshSession } from "./api.js";

/** What the page received, in order: the end-to-end tests read it (frontend/e2e). */
export interface LogEntry {
  type: string;
  id: string | null;
  taskId: string | null;
  progress: number | null;
  message: string | null;
  reason: string | null;
  at: number;
}

declare global {
  interface Window {
    /** Extra client options, set before the page loads (the end-to-end tests do). */
    taskstreamDemoOptions?: Partial<TaskstreamOptions>;
    taskstreamDemo?: { client: TaskstreamClient; log: LogEntry[] };
  }
}

function makeClient(): TaskstreamClient {
  const client = new TaskstreamClient({
    auth: { mode: "cookie", refresh: refreshSession },
    ...window.taskstreamDemoOptions,
  });
  const log: LogEntry[] = [];
  const entry = (type: string, fields: Partial<LogEntry> = {}): void => {
    if (log.length >= 10_000) log.splice(0, 1_000); // a long-open demo tab stays small
    log.push({
      type,
      id: client.getSnapshot().cursor,
      taskId: null,
      progress: null,
      message: null,
      reason: null,
      at: Date.now(),
      ...fields,
    });
  };
  client.subscribe("*", (event) => {
    entry(event.event_type, {
      taskId: event.task_id,
      progress: event.event_type === "task.progress" ? event.data.progress : null,
      message: event.event_type === "task.progress" ? (event.data.message ?? null) : null,
    });
  });
  client.on("stream-open", () => entry("stream-open", { id: null }));
  client.on("stream-reset", (info) => entry("stream-reset", { id: null, reason: info.reason }));
  window.taskstreamDemo = { client, log };
  return client;
}

function Login({ onDone, notice }: { onDone: () => void; notice: string }): ReactNode {
  const [error, setError] = useState("");
  const submit = async (event: FormEvent<HTMLFormElement>): Promise<void> => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    try {
      await login(String(form.get("username")), String(form.get("password")));
      setError("");
      onDone();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };
  return (
    <>
      {notice && <p className="meta">{notice}</p>}
      <form id="login" onSubmit={(e) => void submit(e)}>
        <input name="username" placeholder="username" defaultValue="demo" autoComplete="username" />
        <input
          name="password"
          type="password"
          placeholder="password"
          defaultValue="demo-password"
          autoComplete="current-password"
        />
        <button>Log in</button>
      </form>
      <p id="error" role="alert">
        {error}
      </p>
    </>
  );
}

const STATE_TEXT: Record<string, string> = {
  idle: "not connected",
  connecting: "connecting…",
  open: "live",
  reconnecting: "reconnecting",
  throttled: "too many streams: waiting",
  offline: "offline",
  unauthorized: "signed out",
  closed: "closed",
};

function Connection(): ReactNode {
  const { state, role, nextRetryAt, lastError } = useTaskstreamStatus();
  const [, tick] = useState(0);
  useEffect(() => {
    if (nextRetryAt === null) return;
    const timer = setInterval(() => tick((n) => n + 1), 500);
    return () => clearInterval(timer);
  }, [nextRetryAt]);
  const wait = nextRetryAt === null ? null : Math.max(0, Math.ceil((nextRetryAt - Date.now()) / 1000));
  return (
    <span id="connection" data-state={state} data-role={role ?? ""} className={`conn ${state}`}>
      <span className="dot" /> {STATE_TEXT[state] ?? state}
      {wait !== null && state !== "open" ? `, retry in ${wait} s` : ""}
      {lastError && state !== "open" ? ` (${lastError.code})` : ""}
      <span className="meta"> · {role === "follower" ? "via another tab" : role === "leader" ? "this tab streams" : "own stream"}</span>
    </span>
  );
}

function TaskCard({ task }: { task: ApiTask }): ReactNode {
  const live = useTask(task.id);
  const queryClient = useQueryClient();
  // Events since this page connected win; before any, the API's view of the task.
  const status = live?.status ?? task.status;
  const progress = live?.progress ?? task.progress;
  const message =
    status === "failed"
      ? (live?.error ?? task.error)
      : status === "succeeded"
        ? `done: ${JSON.stringify(live ? live.result : task.result)}`
        : (live?.message ?? task.message);
  const cancel = useMutation({
    mutationFn: () => api<ApiTask>(`/api/v1/tasks/${task.id}/cancel/`, { method: "POST" }),
    onSettled: () => queryClient.invalidateQueries({ queryKey: ["tasks"] }),
  });
  return (
    <div className={`task ${status}`} data-task-id={task.id} data-status={status}>
      <div>
        <b className="status">{status}</b> <span className="meta">{task.id}</span>
        {!isFinal(status) && (
          <button className="cancel" disabled={cancel.isPending} onClick={() => cancel.mutate()}>
            Cancel
          </button>
        )}
      </div>
      <div className="progress" role="progressbar" aria-valuenow={progress} aria-valuemin={0} aria-valuemax={100}>
        <div style={{ width: `${progress}%` }} />
      </div>
      <div className="meta msg">{message}</div>
    </div>
  );
}

function Dashboard({ onSignedOut }: { onSignedOut: () => void }): ReactNode {
  const queryClient = useQueryClient();
  const client = useTaskstreamClient();
  const { state } = useTaskstreamStatus();
  const [steps, setSteps] = useState(10);
  const [stepMs, setStepMs] = useState(300);
  const [resets, setResets] = useState(0);
  const tasks = useQuery({
    queryKey: ["tasks"],
    queryFn: () => api<TaskPage>("/api/v1/tasks/"),
  });
  useTaskstreamEvent("stream-reset", () => setResets((n) => n + 1));
  // A task created in another tab shows up on its first event.
  useEffect(
    () =>
      client.subscribe("*", (event) => {
        const known = queryClient.getQueryData<TaskPage>(["tasks"])?.results.some((t) => t.id === event.task_id);
        // Not cancelRefetch: with events every few ms, each would cancel the fetch the one
        // before started, and the list would never arrive. A fetch in flight began after an
        // event of this task, so the task is in its answer.
        if (known === false) {
          void queryClient.invalidateQueries({ queryKey: ["tasks"] }, { cancelRefetch: false });
        }
      }),
    [client, queryClient],
  );
  useEffect(() => {
    if (state === "unauthorized") onSignedOut();
  }, [state, onSignedOut]);
  const create = useMutation({
    mutationFn: () =>
      api<ApiTask>("/api/v1/tasks/", {
        method: "POST",
        body: JSON.stringify({ kind: "demo", params: { steps, step_ms: stepMs } }),
      }),
    onSuccess: (task) =>
      queryClient.setQueryData<TaskPage>(["tasks"], (page) =>
        page === undefined || page.results.some((t) => t.id === task.id)
          ? page
          : { ...page, count: page.count + 1, results: [task, ...page.results] },
      ),
  });
  return (
    <div id="app">
      <div className="bar">
        <label>
          steps <input id="steps" type="number" value={steps} min={1} max={1000} onChange={(e) => setSteps(Number(e.target.value))} />
        </label>
        <label>
          step ms <input id="step_ms" type="number" value={stepMs} min={0} onChange={(e) => setStepMs(Number(e.target.value))} />
        </label>
        <button id="create" onClick={() => create.mutate()}>
          Create demo task
        </button>
        <button
          id="logout"
          onClick={() => {
            logout();
            onSignedOut();
          }}
        >
          Log out
        </button>
      </div>
      <div className="bar">
        <Connection />
        {resets > 0 && <span className="meta" id="resets">history reset {resets}×: reloaded from the server</span>}
      </div>
      {create.error && <p id="error" role="alert">{create.error.message}</p>}
      {tasks.error && <p role="alert">{tasks.error.message}</p>}
      <div id="tasks">
        {tasks.data?.results.map((task) => <TaskCard key={task.id} task={task} />)}
      </div>
    </div>
  );
}

function newSession(): { client: TaskstreamClient; queryClient: QueryClient } {
  const client = makeClient();
  const queryClient = new QueryClient({ defaultOptions: { queries: { staleTime: 30_000 } } });
  // Events patch the cached task list in place; a stream-reset refetches it.
  syncQueryClient(client, queryClient, { taskKeys: [["tasks"]], resetKeys: [["tasks"]] });
  return { client, queryClient };
}

function App(): ReactNode {
  const [session, setSession] = useState(() => (hasSession() ? newSession() : null));
  const [notice, setNotice] = useState("");
  const start = (): void => setSession(newSession());
  if (session === null) return <Login onDone={start} notice={notice} />;
  return (
    <QueryClientProvider client={session.queryClient}>
      <TaskstreamProvider client={session.client}>
        <Dashboard
          onSignedOut={() => {
            session.client.close();
            setNotice("Signed out: log in again.");
            setSession(null);
          }}
        />
      </TaskstreamProvider>
    </QueryClientProvider>
  );
}

const root = document.getElementById("root");
if (root !== null) {
  createRoot(root).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
}
