/**
 * The Django admin's live task views: the task list, the task page and a user's live view
 * (tasks/admin_live.py renders the markup read here). One EventSource on the staff scope
 * (docs/events.md, "The staff scope"), authenticated by the admin's session cookie.
 *
 * The staff scope is live only, so the page's rows are the snapshot: on every `stream-open`
 * (the first and each reconnect, when events may have been missed) the page fetches itself
 * again and takes each value the snapshot has at a later position. An event or a snapshot
 * value changes a task only if its position is after the task's, and never a finished task:
 * the server's rule, through the client package's own fold, so the order in which the
 * stream and the snapshot arrive does not matter.
 *
 * Markup:
 * - `#ts-live[data-stream]`: the stream URL; the script sets `data-state` (connecting,
 *   open, reconnecting, closed) and a short text.
 * - `[data-ts-task][data-ts-field=status|progress|message]`: a task's widget, with
 *   `data-status`, `data-progress`, `data-message` and `data-position` (the cursor of the
 *   task's last applied event).
 * - `[data-ts-timeline] tbody`: a task's events, a `tr[data-position]` each.
 * - `[data-ts-rows]`: a list whose new rows (`tr[data-ts-row]`) a snapshot adds.
 */
import { applyTaskEvent, isAfter, isFinal, parseTaskEvent } from "@taskstream/client";
import type { TaskEvent, TaskState } from "@taskstream/client";

const TASK_TYPES = [
  "task.started",
  "task.progress",
  "task.succeeded",
  "task.failed",
  "task.cancelled",
] as const;

interface Shown {
  status: string;
  progress: number;
  message: string;
  position: string;
}

function shown(widget: HTMLElement): Shown {
  return {
    status: widget.dataset["status"] ?? "pending",
    progress: Number(widget.dataset["progress"] ?? "0"),
    message: widget.dataset["message"] ?? "",
    position: widget.dataset["position"] ?? "",
  };
}

function text(widget: HTMLElement, state: Shown): string {
  switch (widget.dataset["tsField"]) {
    case "progress":
      return `${state.progress}%`;
    case "message":
      return state.message;
    default:
      return state.status;
  }
}

function render(widget: HTMLElement, state: Shown): void {
  widget.dataset["status"] = state.status;
  widget.dataset["progress"] = String(state.progress);
  widget.dataset["message"] = state.message;
  widget.dataset["position"] = state.position;
  const bar = widget.querySelector("progress");
  if (bar !== null) {
    bar.value = state.progress;
    bar.textContent = `${state.progress}%`;
  }
  const label = widget.querySelector(".ts-text");
  if (label !== null) label.textContent = text(widget, state);
}

function widgets(taskId: string): HTMLElement[] {
  return [...document.querySelectorAll<HTMLElement>(`[data-ts-task="${CSS.escape(taskId)}"]`)];
}

/** The event's effect on a task as shown, or null when it changes nothing. */
function fold(now: Shown, event: TaskEvent, position: string): Shown | null {
  if (isFinal(now.status) || (now.position !== "" && !isAfter(position, now.position))) {
    return null;
  }
  // A pending task has no state to fold into yet; otherwise the fold needs only status
  // and progress from what the page shows (`lastEvent` is the client's bookkeeping).
  const previous: TaskState | undefined =
    now.status === "pending"
      ? undefined
      : {
          taskId: event.task_id,
          status: now.status as TaskState["status"],
          progress: now.progress,
          message: now.message,
          result: undefined,
          error: null,
          lastEvent: event,
        };
  const next = applyTaskEvent(previous, event);
  return { status: next.status, progress: next.progress, message: next.message ?? "", position };
}

/**
 * An event's position `source:partition:offset@epoch` (the event log's, the epoch blank on
 * rows logged before it was recorded) as `[source, partition, offset, epoch]`.
 */
function parts(key: string): [string, number, number, string] {
  const at = key.lastIndexOf("@");
  const position = at < 0 ? key : key.slice(0, at);
  const last = position.lastIndexOf(":");
  const middle = position.lastIndexOf(":", last - 1);
  return [
    position.slice(0, middle),
    Number(position.slice(middle + 1, last)),
    Number(position.slice(last + 1)),
    at < 0 ? "" : key.slice(at + 1),
  ];
}

/**
 * Whether row `a` goes before row `b` in the log's order: by position within one epoch of
 * the topic. Offsets of another epoch (a re-created topic) do not compare: an event goes
 * after those rows.
 */
function before(a: string, b: string): boolean {
  const [sa, pa, oa, ea] = parts(a);
  const [sb, pb, ob, eb] = parts(b);
  if (ea !== eb) return false;
  return sa !== sb ? sa < sb : pa !== pb ? pa < pb : oa < ob;
}

function timelineRow(
  table: HTMLTableElement,
  event: TaskEvent,
  key: string,
  changed: boolean,
): HTMLTableRowElement {
  const row = document.createElement("tr");
  row.dataset["position"] = key;
  const data = JSON.stringify(event.data);
  const cells = [event.event_type, key, event.occurred_at, changed ? "yes" : "no", data];
  if (table.querySelector("th[data-ts-col=trace]") !== null) {
    cells.push(event.traceparent ?? "");
  }
  for (const value of cells) {
    row.insertCell().textContent = value;
  }
  return row;
}

/** Put `row` among the body's rows in the log's order, unless its position is there. */
function placeRow(body: HTMLTableSectionElement, row: HTMLTableRowElement): void {
  const key = row.dataset["position"] ?? "";
  const rows = [...body.querySelectorAll<HTMLTableRowElement>("tr[data-position]")];
  if (rows.some((r) => r.dataset["position"] === key)) return;
  const later = rows.find((r) => before(key, r.dataset["position"] ?? ""));
  body.querySelector("tr.ts-empty")?.remove();
  body.insertBefore(row, later ?? null);
}

class LiveAdmin {
  private refreshing: Promise<void> | null = null;
  private again = false;

  constructor(private readonly status: HTMLElement) {}

  start(url: string): void {
    this.setState("connecting", "connecting…");
    const source = new EventSource(url);
    source.addEventListener("stream-open", () => {
      this.setState("open", "live");
      this.refresh();
    });
    source.addEventListener("stream-reset", () => {
      // Live only: what was missed comes from the snapshot that stream-open fetches.
      this.status.title = "reconnected: values were reloaded";
    });
    for (const type of TASK_TYPES) {
      source.addEventListener(type, (message: MessageEvent<string>) => {
        const event = parseTaskEvent(type, message.data);
        if (event !== null) this.apply(event, message.lastEventId);
      });
    }
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        this.setState("closed", "not live (reload the page)");
      } else {
        this.setState("reconnecting", "reconnecting…");
      }
    };
  }

  private setState(state: string, text: string): void {
    this.status.dataset["state"] = state;
    this.status.textContent = text;
  }

  private apply(event: TaskEvent, position: string): void {
    const found = widgets(event.task_id);
    let changed = false;
    for (const widget of found) {
      const next = fold(shown(widget), event, position);
      if (next !== null) {
        render(widget, next);
        changed = true;
      }
    }
    for (const table of document.querySelectorAll<HTMLTableElement>(
      `[data-ts-timeline="${CSS.escape(event.task_id)}"]`,
    )) {
      const body = table.tBodies[0];
      if (body !== undefined) placeRow(body, timelineRow(table, event, position, changed));
    }
    if (found.length === 0 && document.querySelector("[data-ts-rows]") !== null) {
      this.refresh(); // a task this list does not show yet
    }
  }

  /** Fetch this page again and take what it shows at later positions; one at a time. */
  private refresh(): void {
    if (this.refreshing !== null) {
      this.again = true;
      return;
    }
    this.refreshing = this.merge()
      .catch(() => undefined) // the next open or event tries again
      .finally(() => {
        this.refreshing = null;
        if (this.again) {
          this.again = false;
          this.refresh();
        }
      });
  }

  private async merge(): Promise<void> {
    const response = await fetch(location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const list of fresh.querySelectorAll<HTMLElement>("[data-ts-rows]")) {
      const current = document.querySelector<HTMLElement>(
        `[data-ts-rows="${CSS.escape(list.dataset["tsRows"] ?? "")}"]`,
      );
      if (current === null) continue;
      for (const row of [...list.querySelectorAll<HTMLElement>("tr[data-ts-row]")].reverse()) {
        const id = row.dataset["tsRow"] ?? "";
        if (current.querySelector(`tr[data-ts-row="${CSS.escape(id)}"]`) !== null) continue;
        current.querySelector("tr.ts-empty")?.remove();
        current.prepend(document.importNode(row, true));
      }
    }
    for (const widget of fresh.querySelectorAll<HTMLElement>("[data-ts-task]")) {
      const snapshot = shown(widget);
      if (snapshot.position === "") continue;
      const selector = `[data-ts-task="${CSS.escape(widget.dataset["tsTask"] ?? "")}"][data-ts-field="${CSS.escape(widget.dataset["tsField"] ?? "")}"]`;
      for (const current of document.querySelectorAll<HTMLElement>(selector)) {
        const now = shown(current);
        if (now.position === "" || isAfter(snapshot.position, now.position)) render(current, snapshot);
      }
    }
    for (const table of fresh.querySelectorAll<HTMLTableElement>("[data-ts-timeline]")) {
      const current = document.querySelector<HTMLTableElement>(
        `[data-ts-timeline="${CSS.escape(table.dataset["tsTimeline"] ?? "")}"]`,
      );
      const body = current?.tBodies[0];
      if (body === undefined) continue;
      for (const row of table.querySelectorAll<HTMLTableRowElement>("tbody tr[data-position]")) {
        placeRow(body, document.importNode(row, true));
      }
    }
  }
}

const status = document.getElementById("ts-live");
const url = status?.dataset["stream"];
if (status !== null && url !== undefined) {
  new LiveAdmin(status).start(url);
}
