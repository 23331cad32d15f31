// @vitest-environment jsdom
import { QueryClient } from "@tanstack/query-core";
import { TaskstreamClient } from "@taskstream/client";
import { act, cleanup, render, screen } from "@testing-library/react";
import { StrictMode } from "react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FakeFetch, OPEN, TASK, frame, progress } from "../../client/test/fakes.js";
import {
  TaskstreamProvider,
  useTask,
  useTaskstreamEvent,
  useTaskstreamStatus,
} from "../src/index.js";
import { patchTasks, syncQueryClient } from "../src/query.js";

let net: FakeFetch;
let client: TaskstreamClient;

async function settle(): Promise<void> {
  await act(async () => {
    await vi.advanceTimersByTimeAsync(0);
  });
}

beforeEach(() => {
  vi.useFakeTimers();
  net = new FakeFetch();
  client = new TaskstreamClient({
    fetch: net.fetch,
    locks: null,
    createChannel: null,
    eventTarget: new EventTarget(),
  });
});

afterEach(() => {
  cleanup();
  client.close();
  vi.useRealTimers();
});

function Status(): React.ReactNode {
  const { state, role } = useTaskstreamStatus();
  return <p data-testid="status">{`${state}/${role}`}</p>;
}

function Task({ id }: { id: string }): React.ReactNode {
  const task = useTask(id);
  return <p data-testid="task">{task ? `${task.status} ${task.progress}` : "unknown"}</p>;
}

describe("TaskstreamProvider and hooks", () => {
  it("render the connection and task state from the stream", async () => {
    const resets = vi.fn();
    function OnReset(): null {
      useTaskstreamEvent("stream-reset", resets);
      return null;
    }
    const stream = net.stream();
    render(
      <TaskstreamProvider client={client}>
        <Status />
        <Task id={TASK} />
        <OnReset />
      </TaskstreamProvider>,
    );
    await settle();
    expect(screen.getByTestId("status").textContent).toBe("connecting/solo");
    expect(screen.getByTestId("task").textContent).toBe("unknown");
    stream.push(OPEN + progress(1, 30));
    await settle();
    expect(screen.getByTestId("status").textContent).toBe("open/solo");
    expect(screen.getByTestId("task").textContent).toBe("running 30");
    stream.push(frame("stream-reset", { reason: "cursor-ahead", requested: "x", resumed_from: "y" }));
    await settle();
    expect(resets).toHaveBeenCalledWith({ reason: "cursor-ahead", requested: "x", resumed_from: "y" });
    expect(screen.getByTestId("task").textContent).toBe("unknown");
  });

  it("a provider given options owns its client and closes it on unmount", async () => {
    const stream = net.stream();
    const view = render(
      <TaskstreamProvider
        options={{ fetch: net.fetch, locks: null, createChannel: null, eventTarget: null }}
      >
        <Status />
      </TaskstreamProvider>,
    );
    await settle();
    stream.push(OPEN);
    await settle();
    expect(screen.getByTestId("status").textContent).toBe("open/solo");
    view.unmount();
    await settle();
    expect(stream.closed).toBe(true);
  });

  it("survives StrictMode's unmount and remount in development", async () => {
    net.stream(); // taken by the first client, which StrictMode's cleanup closes
    const second = net.stream();
    render(
      <StrictMode>
        <TaskstreamProvider
          options={{ fetch: net.fetch, locks: null, createChannel: null, eventTarget: null }}
        >
          <Status />
        </TaskstreamProvider>
      </StrictMode>,
    );
    await settle();
    second.push(OPEN);
    await settle();
    expect(screen.getByTestId("status").textContent).toBe("open/solo");
    expect(net.requests).toHaveLength(2);
  });
});

describe("TanStack Query sync", () => {
  it("patches cached tasks in place and invalidates after a reset", async () => {
    const queryClient = new QueryClient();
    const page = {
      count: 1,
      results: [{ id: TASK, status: "pending", progress: 0, message: "", kind: "demo" }],
    };
    const fetchTasks = vi.fn(async () => page);
    await queryClient.fetchQuery({ queryKey: ["tasks"], queryFn: fetchTasks });
    const observer = queryClient.getQueryCache().find({ queryKey: ["tasks"] });
    expect(observer).toBeDefined();
    const stop = syncQueryClient(client, queryClient);
    const stream = net.stream();
    client.start();
    await settle();
    stream.push(OPEN + progress(1, 40));
    await settle();
    expect(queryClient.getQueryData(["tasks"])).toMatchObject({
      results: [{ id: TASK, status: "running", progress: 40, message: "step 40", kind: "demo" }],
    });
    expect(queryClient.getQueryState(["tasks"])?.isInvalidated).toBe(false);
    stream.push(frame("stream-reset", { reason: "epoch-changed", requested: "a", resumed_from: "earliest" }));
    await settle();
    expect(queryClient.getQueryState(["tasks"])?.isInvalidated).toBe(true);
    stop();
  });

  it("never revives a finished task, and leaves other data alone", () => {
    const done = { id: TASK, status: "cancelled", progress: 20 };
    const event = JSON.parse(progress(9, 90).split("data: ")[1] ?? "") as never;
    expect(patchTasks(done, event)).toBe(done);
    const other = [{ id: "other", status: "running", progress: 1 }];
    expect(patchTasks(other, event)).toBe(other);
    expect(patchTasks("text", event)).toBe("text");
  });
});
