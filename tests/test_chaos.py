"""The chaos suite (#10, item 3): one fault at a time under steady load, through nginx.

``make test`` runs a short subset (``test_chaos_subset``); ``make chaos`` runs every fault
(``TASKSTREAM_CHAOS=full``) and writes the table in docs/reliability.md. For each fault:
events lost (must be 0), duplicates a client saw after its own resume (must be 0), the
API tasks created during it that every client saw exactly once (must be all), the time
until every client caught up after the faulty part was back (target < 10 s), whether
each process told to stop exited within its deadline, and which processes the supervisor
had to restart (nothing may need a human). ``TASKSTREAM_CHAOS_ONLY=word,word`` runs only
the faults whose names contain one of the words (for working on one).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from streaming import conf
from tasks.models import AsyncTask
from tests import chaos_faults as faults
from tests.chaos import FaultProxy, FaultResult, Supervisor, account, caught_up
from tests.chaos_faults import DRAIN_SECONDS, Broker, Deployment
from tests.chaos_load import Tally, TaskLoad, resent
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
FULL = os.environ.get("TASKSTREAM_CHAOS") == "full"
ONLY = [w for w in os.environ.get("TASKSTREAM_CHAOS_ONLY", "").split(",") if w]
TABLE = ROOT / "docs" / "reliability.md"


def via(url: str, proxy: FaultProxy) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


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
def topics(run_id: str) -> dict[str, str]:
    tag = f"chaos{time.monotonic_ns() % 10**6}"
    return own_topics(run_id, tag) | {"TASKSTREAM_WORKER_GROUP": f"taskstream-worker-{tag}"}


@pytest.fixture
def deployment(
    stack_env: dict[str, str],
    topics: dict[str, str],
    django_user_model: type[User],
    tmp_path: Path,
    broker: Broker | None,
) -> Iterator[Deployment]:
    redis_url = stack_env["REDIS_URL"]
    db_url = stack_env["DATABASE_URL"]
    redis = FaultProxy(urlsplit(redis_url).hostname or "", urlsplit(redis_url).port or 6379)
    postgres = FaultProxy(urlsplit(db_url).hostname or "", urlsplit(db_url).port or 5432)
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
        TASKSTREAM_WORKER_INSTANCE_ID="chaos-worker-1",
        TASKSTREAM_HEARTBEAT_SECONDS="2",
        KAFKA_BOOTSTRAP_SERVERS=conf.get().require_kafka(),
    )
    with contextlib.ExitStack() as cleanup:
        # Closed last, after the processes: they stop with their dependencies reachable.
        cleanup.callback(redis.close)
        cleanup.callback(postgres.close)
        nodes = [start_node(f"chaos-serve-{i}", env, tmp_path) for i in (1, 2)]
        consumer = Proc("chaos-consume", ["manage.py", "consume_events"], env, tmp_path).start()
        relay = Proc("chaos-relay", ["manage.py", "relay_outbox"], env, tmp_path).start()
        worker = Proc("chaos-worker", ["manage.py", "run_worker"], env, tmp_path).start()
        cleanup.callback(stop_all, [consumer, relay, worker, *(n for n, _ in nodes)])
        nginx = start_nginx(tmp_path / "nginx", [f"127.0.0.1:{port}" for _, port in nodes])
        cleanup.callback(nginx.stop)
        wait_until(lambda: all(healthy(p) for _, p in nodes), 60, "both nodes healthy")
        consumer.wait_log(f"assigned {topics['TASKSTREAM_TOPIC_EVENTS']}")
        worker.wait_log(f"assigned {topics['TASKSTREAM_TOPIC_REQUESTS']}")
        auth = {"Authorization": f"Bearer {access_token(alice)}"}
        clients = [
            EventSourceClient(f"{nginx.base}{STREAM}", auth, nginx.tls, retry_ms=300).start()
            for _ in range(CLIENTS)
        ]
        cleanup.callback(close_all, clients)
        for client in clients:
            client.wait_for(lambda c: any(e.event == "stream-open" for e in c.events), 30)
        publisher = Publisher(topics["TASKSTREAM_TOPIC_EVENTS"], alice, task)
        publisher.start()
        cleanup.callback(publisher.stop_requested.set)
        load = TaskLoad(nginx.base, nginx.tls, access_token(alice))
        load.start()
        cleanup.callback(load.stop_requested.set)
        tallies = [Tally(c, str(task.id)) for c in clients]
        wait_until(lambda: all(len(t.update().seqs) >= 10 for t in tallies), 30, "events")
        procs = {p.name: p for p in (consumer, relay, worker, *(n for n, _ in nodes))}
        supervisor = Supervisor(procs)
        supervisor.start()
        cleanup.callback(supervisor.stopped.set)
        yield Deployment(
            nodes=nodes,
            consumer=consumer,
            relay=relay,
            worker=worker,
            redis=redis,
            postgres=postgres,
            nginx=nginx,
            auth=auth,
            clients=clients,
            tallies=tallies,
            publisher=publisher,
            load=load,
            supervisor=supervisor,
            broker=broker,
            leases=(redis_url, f"{stack_env['TASKSTREAM_REDIS_PREFIX']}:lease:{alice.pk}"),
            topics=topics,
        )


def stop_all(procs: list[Proc]) -> None:
    """Tear down quickly: SIGTERM to all at once; ``stop`` then sends a node its second
    SIGTERM, which skips the drain."""
    for proc in procs:
        if proc.popen is not None and proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.stop()


def close_all(clients: list[EventSourceClient]) -> None:
    for client in clients:
        client.stop()
    for client in clients:
        client.join()


# --- the faults: each injects, brings the faulty part back, and returns the result ------


def fault(d: Deployment, name: str, inject: Callable[[FaultResult], None]) -> FaultResult:
    result = FaultResult(name, first_seq=d.seq() + 1, started=time.monotonic())
    with d.supervisor.lock:  # the fault stops and starts processes itself
        inject(result)  # returns when the faulty part is back
    back, result.back = d.seq(), time.monotonic()
    wait_until(lambda: all(healthy(p) for _, p in d.nodes), 30, "both nodes healthy again")
    tasks = d.load.between(0, result.back)
    result.catch_up = caught_up(d.tallies, back, tasks, CATCH_UP_DEADLINE)
    result.last_seq = back
    return result


SUBSET = [
    ("kill -9 consume_events, restart", faults.kill_consumer),
    ("Redis restart", faults.restart_redis),
]
ALL = [
    *SUBSET,
    ("kill -9 one web node", faults.kill_node),
    ("Redis frozen 5 s", faults.freeze_redis),
    ("PostgreSQL restart", faults.restart_postgres),
    ("Kafka broker restart", faults.restart_kafka),
    ("kill -9 relay_outbox mid-batch, restart", faults.kill_relay),
    ("kill -9 run_worker mid-task, restart", faults.kill_worker),
    ("a client vanishes without FIN", faults.client_vanishes),
    (
        "SIGTERM node, consume_events, relay, worker while Redis is down",
        faults.sigterm_while_redis_down,
    ),
    (
        "SIGTERM node, consume_events, relay, worker while PostgreSQL is down",
        faults.sigterm_while_postgres_down,
    ),
    (
        "SIGTERM node, consume_events, relay, worker while Kafka is down",
        faults.sigterm_while_kafka_down,
    ),
]


def selected(
    faults_: list[tuple[str, Callable[..., None]]],
) -> list[tuple[str, Callable[..., None]]]:
    return [f for f in faults_ if not ONLY or any(w.lower() in f[0].lower() for w in ONLY)]


def run_faults(d: Deployment, faults_: list[tuple[str, Callable[..., None]]]) -> list[FaultResult]:
    results = []
    for name, inject in selected(faults_):
        result = fault(d, name, functools.partial(inject, d))
        time.sleep(2)  # steady state between faults
        # Processes that exited by themselves since the fault began (and were restarted).
        result.restarted_by_supervisor += d.supervisor.since(result.started)
        results.append(result)
    d.load.finish()
    last = d.publisher.finish()
    everything = d.load.between(0, time.monotonic())
    with contextlib.suppress(AssertionError):
        wait_until(
            lambda: all(
                t.update().last_seq() >= last and t.finished(everything) for t in d.tallies
            ),
            30,
        )
    again = resent(set(everything), d.topics)
    for result in results:
        window = d.load.between(result.started, result.back)
        account(result, d.tallies, window)
        requests = sum(again.requests[t] for t in window)
        events = sum(again.events[t] for t in window)
        if requests:
            result.notes.append(f"{requests} requests sent twice by the relay")
        if events:
            result.notes.append(f"{events} events sent again by re-runs, dropped as duplicates")
    return results


def check(results: list[FaultResult], d: Deployment) -> None:
    for r in results:
        print(r.row())
    for r in results:
        assert r.lost == 0, r
        assert r.duplicates == 0, r
        assert r.tasks_once == r.tasks, r
        # The 10 s target is judged by `make chaos` on a quiet machine; inside `make test`,
        # other suites share the two cores, so only "caught up at all" is asserted here
        # (the figure is printed), never a time that a loaded machine can miss.
        limit = CATCH_UP_TARGET if FULL else CATCH_UP_DEADLINE
        assert r.catch_up is not None and r.catch_up < limit, r
        assert all("NOT within" not in e for e in r.exits), r
    # Over the whole run too: every client got every event exactly once, in order, and
    # every task created through the API (also one whose answer a fault lost) ran once.
    expected = list(range(d.publisher.produced))
    for tally in d.tallies:
        assert tally.update().seqs == expected
    owned = AsyncTask.objects.filter(owner__username="alice").exclude(
        id__in=[d.tallies[0].sequence_task]
    )
    for task in owned:
        assert task.status == "succeeded", task
        assert all(t.exactly_once(str(task.id)) for t in d.tallies), task.id


@pytest.mark.skipif(FULL, reason="the full run covers these")
def test_chaos_subset(deployment: Deployment) -> None:
    check(run_faults(deployment, SUBSET), deployment)


@pytest.mark.skipif(not FULL, reason="make chaos (TASKSTREAM_CHAOS=full)")
@pytest.mark.timeout(600)  # twelve faults and a Kafka broker of its own: about 5 minutes
def test_chaos_full(deployment: Deployment) -> None:
    results = run_faults(deployment, ALL)
    if not ONLY:
        write_table(results)
    check(results, deployment)


def write_table(results: list[FaultResult]) -> None:
    header = (
        "| fault | events lost | duplicates after resume | API tasks during it, each exactly "
        "once at every client | all clients caught up after it was back | told to stop: exit "
        "| restarted by the supervisor | needed a human | notes |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
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
