"""What the chaos suite's clients receive, and the API tasks it creates (#10, item 3).

``Tally`` reads one EventSource client's events once each (a run holds tens of thousands
per client; re-parsing them at every poll would load the two cores the run measures).
``TaskLoad`` creates demo tasks through nginx at a steady rate, as browsers do, so that
the outbox relay and the worker carry real work while faults hit them; every task must
then show at every client exactly once: started, each step, succeeded, each event id once.
``resent`` reads Kafka afterwards for what the faults made a process send twice.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from streaming.kafka import RangeReader
from tests.eventsource import EventSourceClient

STEPS = 5
STEP_MS = 200
# What a client must see of each task, in order.
EXPECTED = ["task.started", *["task.progress"] * STEPS, "task.succeeded"]


@dataclass
class Tally:
    """One client's events so far: the publisher's sequence numbers, and per task its
    (event type, event id) in arrival order."""

    client: EventSourceClient
    sequence_task: str  # the publisher's task: its events carry sequence numbers
    seqs: list[int] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)  # time.monotonic() of each of seqs
    tasks: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    read: int = 0

    def update(self) -> Tally:
        events = self.client.snapshot()[self.read :]
        self.read += len(events)
        for event in events:
            if not event.event.startswith("task."):
                continue
            body = json.loads(event.data)
            if body["task_id"] == self.sequence_task:
                self.seqs.append(int(body["data"]["message"]))
                self.arrived.append(event.at)
            else:
                self.tasks.setdefault(body["task_id"], []).append(
                    (body["event_type"], body["event_id"])
                )
        return self

    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else -1

    def finished(self, task_ids: list[str]) -> bool:
        return all(
            (seen := self.tasks.get(t)) is not None and seen[-1][0] == "task.succeeded"
            for t in task_ids
        )

    def exactly_once(self, task_id: str) -> bool:
        seen = self.tasks.get(task_id, [])
        return [t for t, _ in seen] == EXPECTED and len({i for _, i in seen}) == len(seen)


class TaskLoad(threading.Thread):
    """Demo tasks created through the API at ``rate`` per second until ``finish``."""

    def __init__(self, base: str, tls: ssl.SSLContext, token: str, rate: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.base, self.tls, self.rate = base, tls, rate
        self.headers = {"Authorization": f"Bearer {token}"}
        self.stop_requested = threading.Event()
        self.lock = threading.Lock()
        self.created: list[tuple[str, float]] = []  # (task id, when the 201 came)
        self.refused: list[tuple[float, str]] = []  # (when, why): nothing was promised

    def run(self) -> None:
        with self._client() as http:
            next_at = time.monotonic()
            while not self.stop_requested.is_set():
                self.create(http)
                next_at += 1 / self.rate
                self.stop_requested.wait(max(0.0, next_at - time.monotonic()))  # pacing

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, verify=self.tls, headers=self.headers, timeout=10)

    def create(self, http: httpx.Client) -> None:
        body: dict[str, Any] = {"kind": "demo", "params": {"steps": STEPS, "step_ms": STEP_MS}}
        try:
            response = http.post("/api/v1/tasks/", json=body)
        except httpx.HTTPError as exc:
            with self.lock:
                self.refused.append((time.monotonic(), f"{type(exc).__name__}"))
            return
        with self.lock:
            if response.status_code == 201:
                self.created.append((response.json()["id"], time.monotonic()))
            else:
                self.refused.append((time.monotonic(), str(response.status_code)))

    def burst(self, count: int) -> None:
        """``count`` more tasks at once (four connections), on top of the steady rate."""
        threads = [
            threading.Thread(target=self._burst_part, args=(count // 4 + (i < count % 4),))
            for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    def _burst_part(self, count: int) -> None:
        with self._client() as http:
            for _ in range(count):
                self.create(http)

    def between(self, start: float, end: float) -> list[str]:
        with self.lock:
            return [t for t, at in self.created if start <= at <= end]

    def finish(self) -> None:
        self.stop_requested.set()
        self.join(30)


@dataclass
class Resent:
    """Per task: how many ``task.requested`` records Kafka holds beyond the first, and how
    many of its events were written more than once (a re-run's, dropped as duplicates)."""

    requests: Counter[str]
    events: Counter[str]


def resent(task_ids: set[str], topics: dict[str, str]) -> Resent:
    requests = Counter(
        v["task_id"]
        for v in _values(topics["TASKSTREAM_TOPIC_REQUESTS"])
        if v.get("command") == "task.requested" and v.get("task_id") in task_ids
    )
    per_event = Counter(
        (v["task_id"], v["event_id"])
        for v in _values(topics["TASKSTREAM_TOPIC_EVENTS"])
        if v.get("task_id") in task_ids
    )
    events: Counter[str] = Counter()
    for (task_id, _), count in per_event.items():
        events[task_id] += count - 1
    return Resent(Counter({t: n - 1 for t, n in requests.items()}), events)


def _values(topic: str) -> list[dict[str, Any]]:
    reader = RangeReader("chaos-count")
    try:
        values = []
        for partition in reader.partitions(topic):
            low, high = reader.watermarks(topic, partition)
            for message in reader.read(topic, partition, low, high - 1):
                values.append(json.loads(message.value()))
        return values
    finally:
        reader.close()
