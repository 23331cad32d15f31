"""The chaos harness (#10, item 3): the deployment shape under steady load, and one fault at
a time.

Two app nodes behind the shipped nginx, one ``consume_events`` (static membership), a
publisher writing Alice's events to Kafka at a steady rate, and EventSource clients (each
resumes with its own ``Last-Event-ID``, as a browser does). Every process reaches Redis
and PostgreSQL through a ``FaultProxy``, so a restart or a freeze of either is injected
for these processes only, never for the shared services other tests use. The harness
plays the supervisor docs/deployment.md documents (``Restart=always``): a process that
exits by itself is restarted, and counted.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import Proc
from tests.eventsource import EventSourceClient
from tests.sse import wait_until
from tests.tcp_proxy import TcpProxy


class FaultProxy(TcpProxy):
    """A TcpProxy whose server can also restart: every connection reset, new ones refused
    for a while."""

    def restart(self, down_for: float) -> None:
        self._up.clear()
        self.reset()
        time.sleep(down_for)
        self._up.set()


@dataclass
class FaultResult:
    fault: str
    first_seq: int  # the publisher's sequence numbers produced during the fault window
    last_seq: int
    catch_up: float | None = None  # seconds from "the faulty part is back" to all clients
    exits: list[str] = field(default_factory=list)  # "process: code after s (deadline s)"
    restarted_by_supervisor: list[str] = field(default_factory=list)
    lost: int = 0
    duplicates: int = 0

    def row(self) -> str:
        catch = "not caught up" if self.catch_up is None else f"{self.catch_up:.1f} s"
        exits = "; ".join(self.exits) or "n/a"
        restarted = ", ".join(self.restarted_by_supervisor) or "none"
        return (
            f"| {self.fault} | {self.lost} | {self.duplicates} | {catch} | {exits} | "
            f"{restarted} | none |"
        )


class Supervisor:
    """Restarts a process that exited by itself, as systemd's Restart=always would."""

    def __init__(self, procs: dict[str, Proc]) -> None:
        self.procs = procs
        self.restarts: list[str] = []

    def check(self) -> list[str]:
        restarted = []
        for name, proc in self.procs.items():
            if proc.popen is not None and proc.popen.poll() is not None:
                proc.start()
                restarted.append(name)
        self.restarts += restarted
        return restarted


def seqs(client: EventSourceClient) -> list[int]:
    import json

    return [
        int(json.loads(e.data)["data"]["message"])
        for e in client.snapshot()
        if e.event.startswith("task.")
    ]


def caught_up(clients: list[EventSourceClient], target: int, timeout: float) -> float | None:
    """Seconds until every client received sequence ``target`` (None: not within timeout)."""
    started = time.monotonic()
    try:
        wait_until(lambda: all(max(seqs(c), default=-1) >= target for c in clients), timeout)
    except AssertionError:
        for i, c in enumerate(clients):
            if max(seqs(c), default=-1) < target:
                print(
                    f"behind: client {i} at {max(seqs(c), default=-1)} < {target}, "
                    f"connections {c.connections[-3:]}"
                )
        return None
    return time.monotonic() - started


def account(result: FaultResult, clients: list[EventSourceClient]) -> None:
    """Lost: sequences of the window some client never received; duplicates: sequences a
    client received more than once (after its own Last-Event-ID resumes)."""
    window = range(result.first_seq, result.last_seq + 1)
    for client in clients:
        got = [s for s in seqs(client) if s in window]
        result.duplicates += len(got) - len(set(got))
        result.lost += len(set(window) - set(got))


def stop_within(proc: Proc, deadline: float) -> str:
    """SIGTERM, wait up to ``deadline``; a description with the exit code and time."""
    assert proc.popen is not None
    started = time.monotonic()
    proc.popen.send_signal(signal.SIGTERM)
    try:
        code: Any = proc.popen.wait(deadline)
    except Exception:
        proc.popen.kill()
        proc.popen.wait()
        code = "killed"
    took = time.monotonic() - started
    within = "within" if code != "killed" and took <= deadline else "NOT within"
    return f"{proc.name}: exit {code} after {took:.1f} s, {within} its {deadline:.0f} s"


def log_dir(tmp: Path) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp
