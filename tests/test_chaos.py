"""The chaos suite (#10, item 3): one fault at a time under steady load, through nginx.

``make test`` runs a short subset (``test_chaos_subset``); ``make chaos`` runs every fault
(``TASKSTREAM_CHAOS=full``) and writes the table in docs/reliability.md. For each fault:
events lost (must be 0), duplicates a client saw after its own resume (must be 0), the
time until every client caught up after the faulty part was back (target < 10 s), whether
each process told to stop exited within its deadline, and which processes the supervisor
had to restart (nothing may need a human).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from streaming import conf
from tasks.models import AsyncTask
from tests.chaos import (
    FaultProxy,
    FaultResult,
    Supervisor,
    account,
    caught_up,
    seqs,
    stop_within,
)
from tests.conftest import ROOT, Proc, access_token, free_port
from tests.eventsource import EventSourceClient
from tests.sse import wait_until
from tests.test_acceptance_proxy import (
    STREAM,
    Publisher,
    healthy,
    node_env,
    own_topics,
    start_nginx,
    start_node,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

CLIENTS = 20
CATCH_UP_TARGET = 10.0
# How long a fault's clients may take to catch up before the run gives up on them.
CATCH_UP_DEADLINE = 60.0
DRAIN_SECONDS = 3.0
FULL = os.environ.get("TASKSTREAM_CHAOS") == "full"
TABLE = ROOT / "docs" / "reliability.md"


@dataclass
class Deployment:
    nodes: list[tuple[Proc, int]]
    consumer: Proc
    redis: FaultProxy
    postgres: FaultProxy
    clients: list[EventSourceClient]
    publisher: Publisher
    supervisor: Supervisor
    broker: Broker | None

    def seq(self) -> int:
        return self.publisher.produced - 1


def via(url: str, proxy: FaultProxy) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


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


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker | None]:
    """The full run's own Kafka broker, which it restarts; the subset uses the shared one."""
    if not FULL:
        yield None
        return
    own = Broker(tmp_path / "kafka", free_port(), free_port())
    own.run("start")
    original = settings.TASKSTREAM["KAFKA_BOOTSTRAP_SERVERS"]
    conf.set_kafka_bootstrap(f"127.0.0.1:{own.port}")  # topics, the publisher
    try:
        yield own
    finally:
        conf.set_kafka_bootstrap(original)
        own.run("stop")


@pytest.fixture
def deployment(
    stack_env: dict[str, str],
    run_id: str,
    django_user_model: type[User],
    tmp_path: Path,
    broker: Broker | None,
) -> Iterator[Deployment]:
    redis_url = stack_env["REDIS_URL"]
    db_url = stack_env["DATABASE_URL"]
    redis = FaultProxy(urlsplit(redis_url).hostname or "", urlsplit(redis_url).port or 6379)
    postgres = FaultProxy(urlsplit(db_url).hostname or "", urlsplit(db_url).port or 5432)
    topics = own_topics(run_id, f"chaos{time.monotonic_ns() % 10**6}")
    alice = django_user_model.objects.create_user("alice", password="x")
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    env = node_env(
        stack_env,
        topics,
        REDIS_URL=via(redis_url, redis),
        DATABASE_URL=via(db_url, postgres),
        TASKSTREAM_DRAIN_SECONDS=str(DRAIN_SECONDS),
        TASKSTREAM_RETRY_MS="300",
        TASKSTREAM_MAX_STREAMS_PER_USER=str(4 * CLIENTS),
        TASKSTREAM_STREAM_OPENS_PER_MINUTE="100000",
        TASKSTREAM_REPLAY_KAFKA_PER_MINUTE="100000",
        TASKSTREAM_CONSUMER_INSTANCE_ID="chaos-consume-1",
        TASKSTREAM_HEARTBEAT_SECONDS="2",
        KAFKA_BOOTSTRAP_SERVERS=conf.get().require_kafka(),
    )
    with contextlib.ExitStack() as cleanup:
        nodes = [start_node(f"chaos-serve-{i}", env, tmp_path) for i in (1, 2)]
        consumer = Proc("chaos-consume", ["manage.py", "consume_events"], env, tmp_path).start()
        for proc in (consumer, *(n for n, _ in nodes)):
            cleanup.callback(proc.stop)
        cleanup.callback(redis.close)
        cleanup.callback(postgres.close)
        proxy = start_nginx(tmp_path / "nginx", [f"127.0.0.1:{port}" for _, port in nodes])
        cleanup.callback(proxy.stop)
        wait_until(lambda: all(healthy(p) for _, p in nodes), 60, "both nodes healthy")
        consumer.wait_log(f"assigned {topics['TASKSTREAM_TOPIC_EVENTS']}")
        auth = {"Authorization": f"Bearer {access_token(alice)}"}
        clients = [
            EventSourceClient(f"{proxy.base}{STREAM}", auth, proxy.tls, retry_ms=300).start()
            for _ in range(CLIENTS)
        ]
        for client in clients:
            cleanup.callback(client.close)
        for client in clients:
            client.wait_for(lambda c: any(e.event == "stream-open" for e in c.events), 30)
        publisher = Publisher(topics["TASKSTREAM_TOPIC_EVENTS"], alice, task)
        publisher.start()
        cleanup.callback(publisher.stop_requested.set)
        for client in clients:
            client.wait_for(lambda c: len(seqs(c)) >= 10, 30)
        procs = {n.name: n for n, _ in nodes} | {consumer.name: consumer}
        yield Deployment(
            nodes, consumer, redis, postgres, clients, publisher, Supervisor(procs), broker
        )


# --- the faults: each injects, brings the faulty part back, and returns the result ------


def fault(d: Deployment, name: str, inject: Callable[[FaultResult], None]) -> FaultResult:
    result = FaultResult(name, first_seq=d.seq() + 1, last_seq=-1)
    inject(result)  # returns when the faulty part is back
    back = d.seq()
    result.restarted_by_supervisor += wait_for_processes(d)
    result.catch_up = caught_up(d.clients, back, CATCH_UP_DEADLINE)
    result.last_seq = back
    return result


def wait_for_processes(d: Deployment) -> list[str]:
    """Every process up again (restarting any that exited by itself), nodes healthy."""
    restarted = d.supervisor.check()
    wait_until(lambda: all(healthy(p) for _, p in d.nodes), 30, "both nodes healthy again")
    return restarted


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


def sigterm_during_redis_outage(d: Deployment, r: FaultResult) -> None:
    node, port = d.nodes[1]
    d.redis.cut()  # down (every connection dropped, new ones refused) while told to stop
    r.exits.append(stop_within(node, DRAIN_SECONDS + 5))
    r.exits.append(stop_within(d.consumer, 15))
    d.redis.restore()
    node.start()
    d.consumer.start()
    wait_until(lambda: healthy(port), 30, "the stopped node back")
    r.restarted_by_supervisor.append("serve, consume_events (stopped by the test)")


def sigterm_during_postgres_outage(d: Deployment, r: FaultResult) -> None:
    d.postgres.cut()
    r.exits.append(stop_within(d.consumer, 15))
    d.postgres.restore()
    d.consumer.start()
    r.restarted_by_supervisor.append("consume_events (stopped by the test)")


SUBSET = [("kill -9 consume_events, restart", kill_consumer), ("Redis restart", restart_redis)]
ALL = [
    *SUBSET,
    ("kill -9 one web node", kill_node),
    ("Redis frozen 5 s", freeze_redis),
    ("PostgreSQL restart", restart_postgres),
    ("Kafka broker restart", restart_kafka),
    ("SIGTERM node + consume_events while Redis is down", sigterm_during_redis_outage),
    ("SIGTERM consume_events while PostgreSQL is down", sigterm_during_postgres_outage),
]


def run_faults(d: Deployment, faults: list[tuple[str, Callable[..., None]]]) -> list[FaultResult]:
    results = []
    for name, inject in faults:
        results.append(fault(d, name, functools.partial(inject, d)))
        time.sleep(2)  # steady state between faults
    last = d.publisher.finish()
    for client in d.clients:
        with contextlib.suppress(AssertionError):
            client.wait_for(lambda c: last in seqs(c), 30)
    for result in results:
        account(result, d.clients)
    return results


def check(results: list[FaultResult], d: Deployment) -> None:
    for r in results:
        print(r.row())
    for r in results:
        assert r.lost == 0, r
        assert r.duplicates == 0, r
        # The 10 s target is judged by `make chaos` on a quiet machine; inside `make test`,
        # other suites share the two cores, so only "caught up at all" is asserted here
        # (the figure is printed), never a time that a loaded machine can miss.
        limit = CATCH_UP_TARGET if FULL else CATCH_UP_DEADLINE
        assert r.catch_up is not None and r.catch_up < limit, r
        assert all("NOT within" not in e for e in r.exits), r
    # Over the whole run too: every client got every event exactly once, in order.
    expected = list(range(d.publisher.produced))
    for client in d.clients:
        assert seqs(client) == expected


def test_chaos_subset(deployment: Deployment) -> None:
    if FULL:
        pytest.skip("the full run covers these")
    check(run_faults(deployment, SUBSET), deployment)


@pytest.mark.skipif(not FULL, reason="make chaos (TASKSTREAM_CHAOS=full)")
def test_chaos_full(deployment: Deployment) -> None:
    results = run_faults(deployment, ALL)
    write_table(results)
    check(results, deployment)


def write_table(results: list[FaultResult]) -> None:
    header = (
        "| fault | events lost | duplicates after resume | all clients caught up after "
        "it was back | told to stop: exit | restarted by the supervisor | needed a human |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = header + "\n".join(r.row() for r in results) + f"\n\nLast run: {stamp}, `make chaos`.\n"
    text = TABLE.read_text()
    new = re.sub(
        r"(<!-- chaos-table -->\n).*?(<!-- /chaos-table -->)",
        lambda m: m.group(1) + body + m.group(2),
        text,
        flags=re.DOTALL,
    )
    TABLE.write_text(new)
