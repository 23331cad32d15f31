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
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos_load import Tally
from tests.conftest import Proc
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
    started: float  # time.monotonic() when the fault began
    last_seq: int = -1
    back: float = 0.0  # time.monotonic() when the faulty part was back
    catch_up: float | None = None  # seconds from "the faulty part is back" to all clients
    exits: list[str] = field(default_factory=list)  # "process: code after s (deadline s)"
    restarted_by_supervisor: list[str] = field(default_factory=list)
    lost: int = 0
    duplicates: int = 0
    tasks: int = 0  # API tasks created (201) during the fault window
    tasks_once: int = 0  # ... of which every client saw every event exactly once
    notes: list[str] = field(default_factory=list)

    def row(self) -> str:
        catch = "not caught up" if self.catch_up is None else f"{self.catch_up:.1f} s"
        exits = "; ".join(self.exits) or "n/a"
        restarted = ", ".join(self.restarted_by_supervisor) or "none"
        notes = "; ".join(self.notes) or ""
        return (
            f"| {self.fault} | {self.lost} | {self.duplicates} | {self.tasks_once}/{self.tasks} "
            f"| {catch} | {exits} | {restarted} | none | {notes} |"
        )


class Supervisor(threading.Thread):
    """Restarts a process that exited by itself, as systemd's Restart=always would: checks
    twice a second, except while a fault holds ``lock`` (it stops and starts processes on
    purpose)."""

    def __init__(self, procs: dict[str, Proc]) -> None:
        super().__init__(daemon=True)
        self.procs = procs
        self.lock = threading.Lock()
        self.restarts: list[tuple[float, str]] = []  # (when, "name (exit code)")
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            with self.lock:
                for name, proc in self.procs.items():
                    if proc.popen is not None and proc.popen.poll() is not None:
                        code = proc.popen.returncode
                        proc.start()
                        self.restarts.append((time.monotonic(), f"{name} (exit {code})"))

    def since(self, start: float) -> list[str]:
        return [what for at, what in self.restarts if at >= start]


def caught_up(tallies: list[Tally], target: int, tasks: list[str], timeout: float) -> float | None:
    """Seconds until every client received sequence ``target`` and the final event of every
    task in ``tasks`` (None: not within timeout)."""
    started = time.monotonic()

    def behind() -> list[Tally]:
        return [t for t in tallies if t.update().last_seq() < target or not t.finished(tasks)]

    try:
        wait_until(lambda: not behind(), timeout)
    except AssertionError:
        for i, tally in enumerate(tallies):
            if tally in behind():
                unfinished = [t for t in tasks if not tally.finished([t])]
                print(
                    f"behind: client {i} at {tally.last_seq()} < {target}, tasks not finished "
                    f"{unfinished[:3]}, connections {tally.client.connections[-3:]}"
                )
        return None
    return time.monotonic() - started


def account(result: FaultResult, tallies: list[Tally], tasks: list[str]) -> None:
    """Lost: sequences of the window some client never received; duplicates: sequences a
    client received more than once (after its own Last-Event-ID resumes). Tasks: those
    created in the window that every client saw exactly once."""
    window = range(result.first_seq, result.last_seq + 1)
    for tally in tallies:
        got = [s for s in tally.update().seqs if s in window]
        result.duplicates += len(got) - len(set(got))
        result.lost += len(set(window) - set(got))
    result.tasks = len(tasks)
    result.tasks_once = sum(all(t.exactly_once(task) for t in tallies) for task in tasks)


def stacks(proc: Proc) -> str:
    """Where a process hangs: its threads' stacks, if py-spy is installed (bench/)."""
    spy = Path(sys.executable).parent / "py-spy"
    if proc.popen is None or not spy.exists():
        return "(no py-spy: pip install -r bench/requirements.txt to see where)"
    dump = subprocess.run(
        [str(spy), "dump", "--pid", str(proc.popen.pid)], capture_output=True, text=True
    )
    return dump.stdout + dump.stderr


def stop_together(procs: list[tuple[Proc, float]]) -> list[str]:
    """SIGTERM every process at once and watch them all; a description of each exit with
    its code and time (a process still running after its deadline is killed)."""
    started = time.monotonic()
    for proc, _ in procs:
        assert proc.popen is not None
        proc.popen.send_signal(signal.SIGTERM)
    took: dict[str, float] = {}
    codes: dict[str, Any] = {}
    while len(codes) < len(procs):
        now = time.monotonic()
        for proc, deadline in procs:
            assert proc.popen is not None
            if proc.name in codes:
                continue
            if proc.popen.poll() is not None:
                codes[proc.name], took[proc.name] = proc.popen.returncode, now - started
            elif now - started > deadline:
                print(f"{proc.name} still running after {deadline:.0f} s:\n{stacks(proc)}")
                proc.kill()
                codes[proc.name], took[proc.name] = "killed", now - started
        time.sleep(0.05)  # polling exit codes, not waiting for a condition to settle
    exits = []
    for proc, deadline in procs:
        within = "within" if codes[proc.name] != "killed" else "NOT within"
        exits.append(
            f"{proc.name}: exit {codes[proc.name]} after {took[proc.name]:.1f} s, "
            f"{within} its {deadline:.0f} s"
        )
    return exits
