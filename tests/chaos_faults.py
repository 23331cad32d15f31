"""The chaos suite's faults (#10, item 3): each injects one fault into the running
deployment and returns when the faulty part is back (tests/test_chaos.py measures the rest).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from tests.chaos import FaultProxy, FaultResult, Supervisor, stop_together
from tests.chaos_load import Tally, TaskLoad
from tests.conftest import ROOT, Proc
from tests.eventsource import EventSourceClient
from tests.sse import wait_until
from tests.tcp_proxy import TcpProxy
from tests.test_acceptance_proxy import STREAM, Nginx, Publisher, healthy, metric

DRAIN_SECONDS = 3.0
# Deadlines for a process told to stop (docs/deployment.md: the node's grace period is
# TASKSTREAM_DRAIN_SECONDS + 5 s; the other units' TimeoutStopSec is 15 s).
NODE_DEADLINE = DRAIN_SECONDS + 5
PROCESS_DEADLINE = 15.0
# How long a vanished client's stream may hold the node (docs/reliability.md).
VANISHED_FREED_WITHIN = 60.0


@dataclass
class Broker:
    dir: Path
    port: int
    controller_port: int

    def run(self, command: str) -> None:
        args = [str(ROOT / "scripts" / "kafka_broker"), command, "--dir", str(self.dir)]
        if command == "start":
            args += ["--port", str(self.port), "--controller-port", str(self.controller_port)]
        env = {**os.environ, "PYTHON": sys.executable}
        subprocess.run(args, check=True, capture_output=True, timeout=180, env=env)


@dataclass
class Deployment:
    nodes: list[tuple[Proc, int]]
    consumer: Proc
    relay: Proc
    worker: Proc
    redis: FaultProxy
    postgres: FaultProxy
    nginx: Nginx
    auth: dict[str, str]
    clients: list[EventSourceClient]
    tallies: list[Tally]
    publisher: Publisher
    load: TaskLoad
    supervisor: Supervisor
    broker: Broker | None
    leases: tuple[str, str]  # (REDIS_URL, the lease key of the clients' user)
    topics: dict[str, str]  # the processes' topics and groups (TASKSTREAM_* variables)

    def seq(self) -> int:
        return self.publisher.produced - 1


def kill_consumer(d: Deployment, r: FaultResult) -> None:
    time.sleep(1)
    d.consumer.kill()  # SIGKILL mid-batch: its last batch is not committed
    d.consumer.start()  # the supervisor's restart
    r.restarted_by_supervisor.append("consume_events (killed)")


def kill_node(d: Deployment, r: FaultResult) -> None:
    node, port = d.nodes[0]
    node.kill()  # its clients reconnect through nginx to the other node
    time.sleep(1)
    node.start()
    wait_until(lambda: healthy(port), 30, "the killed node back")
    r.restarted_by_supervisor.append("serve (killed)")


def kill_relay(d: Deployment, r: FaultResult) -> None:
    """Mid-batch: the relay is held (SIGSTOP) while a burst of tasks is created through the
    API, and killed 50 ms after it resumes, while it hands the rows to Kafka and records
    their acks: some rows are acknowledged and not marked sent, so they go out twice."""
    assert d.relay.popen is not None
    pid = d.relay.popen.pid
    os.kill(pid, signal.SIGSTOP)
    before = len(d.load.created)
    d.load.burst(12)
    os.kill(pid, signal.SIGCONT)
    time.sleep(0.05)
    d.relay.kill()
    d.relay.start()
    r.notes.append(f"killed 50 ms into a batch of {len(d.load.created) - before} queued rows")
    r.restarted_by_supervisor.append("relay_outbox (killed)")


def kill_worker(d: Deployment, r: FaultResult) -> None:
    """Mid-task: while the clients have seen tasks start and not finish."""

    def running() -> list[str]:
        tally = d.tallies[0].update()
        return [t for t, seen in tally.tasks.items() if seen[-1][0] != "task.succeeded"]

    wait_until(running, 10, "a task running")
    d.worker.kill()
    r.notes.append(f"killed with {len(running())} tasks started and not finished")
    d.worker.start()
    r.restarted_by_supervisor.append("run_worker (killed)")


def restart_redis(d: Deployment, r: FaultResult) -> None:
    d.redis.restart(down_for=1.0)


def freeze_redis(d: Deployment, r: FaultResult) -> None:
    d.redis.freeze()
    time.sleep(5)
    d.redis.thaw()


def restart_postgres(d: Deployment, r: FaultResult) -> None:
    d.postgres.restart(down_for=2.0)


def restart_kafka(d: Deployment, r: FaultResult) -> None:
    assert d.broker is not None
    d.broker.run("stop")  # SIGTERM, then the same broker and data back (waits until ready)
    d.broker.run("start")


def client_vanishes(d: Deployment, r: FaultResult) -> None:
    """One more client of the same user, through a proxy that then stops forwarding both
    ways without closing anything (its window shuts after 1 KiB): the nodes must free its
    stream (open-stream gauge and the user's leases back where they were), while the other
    clients go on. Back: when the stream is freed."""
    baseline = (open_streams(d), live_leases(d))
    target = urlport(d.nginx.base)
    proxy = TcpProxy("127.0.0.1", target, upstream_rcvbuf=1024)
    url = f"https://127.0.0.1:{proxy.port}{STREAM}"
    client = EventSourceClient(url, d.auth, d.nginx.tls, retry_ms=300, reconnect=False).start()
    try:
        client.wait_for(lambda c: any(e.event == "stream-open" for e in c.events), 30)
        wait_until(lambda: open_streams(d) == baseline[0] + 1, 10, "the extra stream open")
        proxy.freeze()
        vanished = time.monotonic()
        wait_until(
            lambda: (open_streams(d), live_leases(d)) == baseline,
            VANISHED_FREED_WITHIN,
            "the vanished client's stream freed",
        )
        freed = time.monotonic() - vanished
    finally:
        proxy.close()
        client.close()
    during = max_latency(d, vanished, vanished + freed)
    r.notes.append(
        f"stream and lease freed {freed:.1f} s after the client vanished; meanwhile the "
        f"other clients' events took at most {during:.2f} s to arrive"
    )


def max_latency(d: Deployment, since: float, until: float) -> float:
    """The slowest delivery to any client of the publisher's events sent between ``since``
    and ``until``."""
    sent = list(d.publisher.sent_at)
    worst = 0.0
    for tally in d.tallies:
        tally.update()
        for seq, at in zip(tally.seqs, tally.arrived, strict=True):
            if seq < len(sent) and since <= sent[seq] <= until:
                worst = max(worst, at - sent[seq])
    return worst


def open_streams(d: Deployment) -> float:
    return sum(metric(port, "taskstream_streams_open") for _, port in d.nodes)


def live_leases(d: Deployment) -> int:
    url, key = d.leases
    with redis.Redis.from_url(url) as client:
        return int(client.zcount(key, time.time(), "+inf"))


def urlport(base: str) -> int:
    port = httpx.URL(base).port
    assert port is not None
    return port


def sigterm_during(
    d: Deployment, r: FaultResult, cut: Callable[[], None], restore: Callable[[], None]
) -> None:
    """SIGTERM to one node, consume_events, the relay and the worker at once while a
    dependency is unreachable (``cut``); each must exit within its deadline. The supervisor
    then starts them again, once the dependency is back (``restore``)."""
    node, port = d.nodes[1]
    cut()
    time.sleep(1)  # down before the signal, as an outage would be
    r.exits += stop_together(
        [
            (node, NODE_DEADLINE),
            (d.consumer, PROCESS_DEADLINE),
            (d.relay, PROCESS_DEADLINE),
            (d.worker, PROCESS_DEADLINE),
        ]
    )
    restore()
    for proc in (node, d.consumer, d.relay, d.worker):
        proc.start()
    wait_until(lambda: healthy(port), 30, "the stopped node back")
    r.restarted_by_supervisor.append("all four (stopped by the test)")


def sigterm_while_redis_down(d: Deployment, r: FaultResult) -> None:
    sigterm_during(d, r, d.redis.cut, d.redis.restore)


def sigterm_while_postgres_down(d: Deployment, r: FaultResult) -> None:
    sigterm_during(d, r, d.postgres.cut, d.postgres.restore)


def sigterm_while_kafka_down(d: Deployment, r: FaultResult) -> None:
    broker = d.broker
    assert broker is not None
    sigterm_during(d, r, lambda: broker.run("stop"), lambda: broker.run("start"))
