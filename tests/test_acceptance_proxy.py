"""AC-09 and AC-12 (../shared/research/feature-anchors.md §4) behind a real nginx running
the production site file, deploy/nginx/taskstream.conf, rendered with test addresses,
ports and paths only (deploy/nginx/render.py). Every other process is the project's own
command (`manage.py serve`, `manage.py consume_events`) on the test database, with topics
and a consumer group of each test's own, so the shared `stack` never interferes.

Scaled for a 2-core machine: AC-09 produces 2,000 foreign events (not 10,000); AC-12 runs
40 clients per node (not 200), and its drain-spread check is calibrated for that N (see
`check_spread`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
import signal
import ssl
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from django.contrib.auth.models import User

from deploy.nginx.render import Placement, write_standalone
from streaming.kafka import ensure_topics, producer_config
from tasks.models import AsyncTask
from tests.conftest import ROOT, Proc, access_token, free_port
from tests.eventsource import Connection, EventSourceClient
from tests.fakes import event_value
from tests.sse import wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

STREAM = "/api/v1/events/stream"
PARTITIONS = 3


# --- processes --------------------------------------------------------------------------


@dataclass
class Nginx:
    popen: subprocess.Popen[bytes]
    base: str  # https://127.0.0.1:PORT
    tls: ssl.SSLContext
    prefix: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start_nginx(
    prefix: Path, upstreams: list[str], stream_read_timeout: str | None = None
) -> Nginx:
    prefix.mkdir(parents=True, exist_ok=True)
    cert, key = prefix / "cert.pem", prefix / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    https_port = free_port()
    place = Placement(
        upstreams=upstreams,
        https_port=https_port,
        http_port=free_port(),
        certificate=cert,
        certificate_key=key,
        static_root=ROOT / "realtime" / "static",
        log_dir=prefix / "logs",
        stream_read_timeout=stream_read_timeout,
    )
    main = write_standalone(place, prefix)
    popen = subprocess.Popen(
        [
            "nginx",
            "-p",
            str(prefix),
            "-c",
            str(main),
            "-e",
            str(prefix / "error.log"),
            "-g",
            "daemon off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(prefix / "nginx.stderr").open("wb"),
    )
    tls = ssl.create_default_context(cafile=str(cert))
    proxy = Nginx(popen, f"https://127.0.0.1:{https_port}", tls, prefix)

    def static_served() -> bool:
        if popen.poll() is not None:
            raise AssertionError(f"nginx exited: {(prefix / 'nginx.stderr').read_text()}")
        try:
            r = httpx.get(f"{proxy.base}/static/taskstream/client.js", verify=tls, timeout=2)
        except httpx.TransportError:
            return False
        return r.status_code == 200 and "EventSource" in r.text

    wait_until(static_served, 20, "nginx to serve /static/ over TLS")
    return proxy


def node_env(base: dict[str, str], topics: dict[str, str], **extra: str) -> dict[str, str]:
    env = dict(base)
    env.update(topics)
    env.update(extra)
    return env


def start_node(name: str, env: dict[str, str], log_dir: Path) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc(name, ["manage.py", "serve", "--port", str(port), "--proxy-headers"], env, log_dir)
    proc.start()
    return proc, port


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def metric(port: int, name: str, **labels: str) -> float:
    """One sample from a node's /metrics (scraped directly: nginx denies /metrics)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def cleanup() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


def own_topics(run_id: str, tag: str) -> dict[str, str]:
    """Topics and consumer group for one test, as the env of its processes."""
    events = f"task.events.{run_id}.{tag}"
    topics = {
        "TASKSTREAM_TOPIC_EVENTS": events,
        "TASKSTREAM_TOPIC_REQUESTS": f"task.requests.{run_id}.{tag}",
        "TASKSTREAM_TOPIC_DLQ": f"task.events.dlq.{run_id}.{tag}",
        "TASKSTREAM_CONSUMER_GROUP": f"taskstream-events-{run_id}-{tag}",
    }
    ensure_topics(
        [topics["TASKSTREAM_TOPIC_EVENTS"], topics["TASKSTREAM_TOPIC_DLQ"]],
        partitions=PARTITIONS,
    )
    return topics


def partition_of(user: User) -> int:
    # librdkafka's default partitioner (consistent_random): CRC-32 of the key.
    return zlib.crc32(str(user.pk).encode()) % PARTITIONS


def produce_acked(
    topic: str, records: list[tuple[str, dict[str, Any]]], producer: Producer | None = None
) -> list[tuple[int, int, float]]:
    """Produce and wait for every ack; return each record's (partition, offset, ack time)."""
    producer = producer or Producer(producer_config())
    positions: list[tuple[int, int, float]] = []

    def acked(err: Any, msg: Any) -> None:
        assert err is None, err
        positions.append((msg.partition(), msg.offset(), time.monotonic()))

    for key, value in records:
        producer.produce(topic, key=key, value=json.dumps(value), on_delivery=acked)
        producer.poll(0)
    assert producer.flush(30) == 0, "records not acknowledged"
    return positions


def cursor_offset(cursor: str | None, topic: str, partition: int) -> int:
    for entry in (cursor or "").split(","):
        match = re.match(rf"^{re.escape(topic)}:{partition}:(\d+)@", entry)
        if match:
            return int(match.group(1))
    return -1


def task_events(client: EventSourceClient) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in client.snapshot() if e.event.startswith("task.")]


# --- AC-09 ------------------------------------------------------------------------------

HEARTBEAT = 1.0
READ_TIMEOUT = 3  # the stream's proxy_read_timeout in this test (shipped: 1h)


def test_ac09_liveness_through_nginx_heartbeats_unbuffered_and_id_only_frames(
    stack_env: dict[str, str],
    run_id: str,
    django_user_model: type[User],
    tmp_path: Path,
    cleanup: contextlib.ExitStack,
) -> None:
    topics = own_topics(run_id, "ac09")
    topic = topics["TASKSTREAM_TOPIC_EVENTS"]
    alice = django_user_model.objects.create_user("alice", password="x")
    # Bob's records must share Alice's partition: that is where id-only frames matter.
    bob = next(
        u
        for u in (django_user_model.objects.create_user(f"bob{i}", password="x") for i in range(30))
        if partition_of(u) == partition_of(alice)
    )
    task_a = AsyncTask.objects.create(owner=alice, kind="demo")
    task_b = AsyncTask.objects.create(owner=bob, kind="demo")

    env = node_env(
        stack_env, topics, TASKSTREAM_HEARTBEAT_SECONDS=str(HEARTBEAT), TASKSTREAM_DRAIN_SECONDS="1"
    )
    node, port = start_node("ac09-serve", env, tmp_path)
    cleanup.callback(node.stop)
    consumer = Proc("ac09-consume", ["manage.py", "consume_events"], env, tmp_path).start()
    cleanup.callback(consumer.stop)
    proxy = start_nginx(tmp_path / "nginx", [f"127.0.0.1:{port}"], f"{READ_TIMEOUT}s")
    cleanup.callback(proxy.stop)
    wait_until(lambda: healthy(port), 60, "the node to answer /healthz")
    consumer.wait_log(f"assigned {topic}")
    assert httpx.get(f"{proxy.base}/metrics", verify=proxy.tls).status_code == 403

    auth = {"Authorization": f"Bearer {access_token(alice)}"}
    client = EventSourceClient(f"{proxy.base}{STREAM}", auth, proxy.tls, reconnect=False)
    client.start()
    cleanup.callback(client.close)
    client.wait_for(lambda c: any(e.event == "stream-open" for e in c.events), 15)

    # 1. Idle: heartbeats at least every H keep the stream open well past the proxy's
    # read timeout, on the one connection it opened.
    beats_wanted = 3 * READ_TIMEOUT
    client.wait_for(
        lambda c: sum(e.event == "heartbeat" for e in c.events) >= beats_wanted,
        beats_wanted * HEARTBEAT + 10,
    )
    times = [e.at for e in client.snapshot() if e.event in ("stream-open", "heartbeat")]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    open_for = times[-1] - times[0]
    print(f"AC-09 heartbeat gaps (s): {[round(g, 3) for g in gaps]}; open {open_for:.2f} s")
    assert len(client.connections) == 1 and client.connections[0].ended is None
    assert max(gaps) <= HEARTBEAT + 0.3, gaps
    assert open_for >= 2.5 * READ_TIMEOUT

    # 2. After the idle time, an event arrives at once: nothing buffers it. (The producer
    # is connected beforehand: its bootstrap is not the product's latency.)
    producer = Producer(producer_config())
    producer.list_topics(topic, timeout=10)
    started = time.monotonic()
    (first,) = produce_acked(
        topic,
        [(str(alice.pk), event_value(user_id=alice.pk, task_id=str(task_a.id)))],
        producer,
    )
    client.wait_for(lambda c: len(task_events(c)) == 1, 10)
    arrival = next(e.at for e in client.snapshot() if e.event.startswith("task."))
    since_ack, since_call = arrival - first[2], arrival - started
    print(
        f"AC-09 event after {open_for:.1f} s idle arrived {since_ack * 1000:.0f} ms after the "
        f"broker's ack ({since_call * 1000:.0f} ms after the produce call)"
    )
    assert since_ack <= 1.0
    assert first[0] == partition_of(alice)

    # 3. 2,000 of Bob's records in Alice's partition, none of hers: her client's id still
    # advances (id-only frames), and she receives none of them.
    flood = [
        (str(bob.pk), event_value(user_id=bob.pk, task_id=str(task_b.id), data={"progress": 1}))
        for _ in range(2000)
    ]
    positions = produce_acked(topic, flood, producer)
    assert {p for p, _, _ in positions} == {first[0]}, "Bob's records left Alice's partition"
    last_b = max(o for _, o, _ in positions)
    client.wait_for(lambda c: cursor_offset(c.last_id, topic, first[0]) >= last_b, 30)
    assert [e["user_id"] for e in task_events(client)] == [alice.pk]
    assert not [e for e in client.snapshot() if e.event == "message"]
    advanced_to = client.last_id
    print(f"AC-09 Alice's id advanced from offset {first[1]} to {advanced_to} via id-only frames")

    # 4. A reconnect with that id reads nothing again: no Kafka scan, no event written.
    kafka_replays = metric(port, "taskstream_replays_total", source="kafka")
    events_sent = metric(port, "taskstream_stream_events_sent_total")
    client.close()
    again = EventSourceClient(f"{proxy.base}{STREAM}", auth, proxy.tls, reconnect=False)
    again.last_id = advanced_to
    again.start()
    cleanup.callback(again.close)
    # A heartbeat comes only after the replay: the resume is complete when one is seen.
    again.wait_for(lambda c: any(e.event == "heartbeat" for e in c.events), 15)
    assert again.connections[0].resumed_from == advanced_to
    assert task_events(again) == []
    assert metric(port, "taskstream_replays_total", source="kafka") == kafka_replays
    assert metric(port, "taskstream_stream_events_sent_total") == events_sent
    print(f"AC-09 resume: kafka replays {kafka_replays:.0f} -> unchanged, events sent unchanged")


# --- AC-12 ------------------------------------------------------------------------------

CLIENTS_PER_NODE = 40  # 200 per node does not fit this 2-core machine with 2 nodes + nginx
DRAIN_SECONDS = 5.0
RATE = 50.0  # events per second, all for Alice


class Publisher(threading.Thread):
    """Alice's events at a steady rate, each with its sequence number in data.message."""

    def __init__(self, topic: str, user: User, task: AsyncTask) -> None:
        super().__init__(daemon=True)
        self.topic, self.key = topic, str(user.pk)
        self.user_id, self.task_id = user.pk, str(task.id)
        self.stop_requested = threading.Event()
        self.acked: set[int] = set()
        self.failed: list[str] = []
        self.produced = 0
        self.sent_at: list[float] = []  # time.monotonic() each sequence number was produced
        self.lock = threading.Lock()

    def run(self) -> None:
        producer = Producer(producer_config())
        next_at = time.monotonic()
        while not self.stop_requested.is_set():
            seq = self.produced

            def acked(err: Any, _msg: Any, seq: int = seq) -> None:
                with self.lock:
                    if err is None:
                        self.acked.add(seq)
                    else:
                        self.failed.append(str(err))

            value = event_value(
                user_id=self.user_id,
                task_id=self.task_id,
                data={"progress": seq % 101, "message": str(seq)},
            )
            self.sent_at.append(time.monotonic())
            producer.produce(self.topic, key=self.key, value=json.dumps(value), on_delivery=acked)
            producer.poll(0)
            self.produced += 1
            next_at += 1 / RATE
            self.stop_requested.wait(max(0.0, next_at - time.monotonic()))  # pacing, not sync
        assert producer.flush(30) == 0

    def finish(self) -> int:
        """Stop, wait for every ack; return the last sequence number produced."""
        self.stop_requested.set()
        self.join(40)
        assert not self.failed, self.failed[:3]
        assert self.acked == set(range(self.produced))
        return self.produced - 1


def stop_all(clients: list[EventSourceClient]) -> None:
    for client in clients:
        client.stop()


def join_all(clients: list[EventSourceClient]) -> None:
    for client in clients:
        client.join()


def seqs(client: EventSourceClient) -> list[int]:
    return [int(e["data"]["message"]) for e in task_events(client)]


def check_spread(ends: list[float], window: float) -> dict[str, Any]:
    """How the drained streams' ends spread over the window (offsets from SIGTERM).

    The AC's "no more than 20 % within any 1 s" is calibrated for 200 streams over a
    10 s window: a uniform spread then breaks it in 0.05 % of runs. With 40 streams over
    5 s the same 0.05 % point is 50 %, and 20 % fails most uniform runs. So this checks,
    at the same 0.05 %-ish false-alarm rate: a Kolmogorov-Smirnov distance to uniform
    over the window below 1.95/sqrt(n) (alpha 0.001), the busiest 1 s holding at most half,
    and the ends covering at least half the window. A burst (all within 1 s) fails all three.
    """
    ends = sorted(ends)
    n = len(ends)
    ks = max(
        max((i + 1) / n - min(t / window, 1.0), min(t / window, 1.0) - i / n)
        for i, t in enumerate(ends)
    )
    busiest, j = 0, 0
    for i in range(n):
        while ends[i] - ends[j] >= 1.0:
            j += 1
        busiest = max(busiest, i - j + 1)
    bins = [0] * (math.ceil(window) + 2)
    for t in ends:
        bins[min(int(t), len(bins) - 1)] += 1
    return {
        "n": n,
        "ks": ks,
        "ks_limit": 1.95 / math.sqrt(n),
        "busiest_1s": busiest,
        "span": ends[-1] - ends[0],
        "histogram_1s": bins,
    }


def test_ac12_graceful_drain_and_failover_through_nginx(
    stack_env: dict[str, str],
    run_id: str,
    django_user_model: type[User],
    tmp_path: Path,
    cleanup: contextlib.ExitStack,
) -> None:
    topics = own_topics(run_id, "ac12")
    topic = topics["TASKSTREAM_TOPIC_EVENTS"]
    alice = django_user_model.objects.create_user("alice", password="x")
    task = AsyncTask.objects.create(owner=alice, kind="demo")
    n_clients = 2 * CLIENTS_PER_NODE
    env = node_env(
        stack_env,
        topics,
        TASKSTREAM_DRAIN_SECONDS=str(DRAIN_SECONDS),
        TASKSTREAM_RETRY_MS="300",
        # All clients are Alice's: lift her per-user caps above this test's load.
        TASKSTREAM_MAX_STREAMS_PER_USER=str(4 * n_clients),
        TASKSTREAM_STREAM_OPENS_PER_MINUTE="100000",
    )
    # Teardown, in this order (ExitStack runs callbacks last-in first-out): tell every
    # client to stop, stop the processes (the servers end the streams), join the clients.
    clients: list[EventSourceClient] = []
    cleanup.callback(join_all, clients)
    node1, port1 = start_node("ac12-serve-1", env, tmp_path)
    node2, port2 = start_node("ac12-serve-2", env, tmp_path)
    consumers = [
        Proc(f"ac12-consume-{i}", ["manage.py", "consume_events"], env, tmp_path).start()
        for i in (1, 2)
    ]
    for proc in (node1, node2, *consumers):
        cleanup.callback(proc.stop)
    proxy = start_nginx(tmp_path / "nginx", [f"127.0.0.1:{port1}", f"127.0.0.1:{port2}"])
    cleanup.callback(proxy.stop)
    wait_until(lambda: healthy(port1) and healthy(port2), 60, "both nodes to answer /healthz")
    for consumer in consumers:  # one group: each owns some of the partitions
        consumer.wait_log(f"assigned {topic}")

    auth = {"Authorization": f"Bearer {access_token(alice)}"}
    clients += [
        EventSourceClient(f"{proxy.base}{STREAM}", auth, proxy.tls).start()
        for _ in range(n_clients)
    ]
    cleanup.callback(stop_all, clients)
    for client in clients:
        client.wait_for(lambda c: any(e.event == "stream-open" for e in c.events), 30)
    on_node1 = metric(port1, "taskstream_streams_open")
    on_node2 = metric(port2, "taskstream_streams_open")
    print(f"AC-12 streams per node before the drain: {on_node1:.0f} / {on_node2:.0f}")
    assert on_node1 + on_node2 == n_clients and min(on_node1, on_node2) >= n_clients // 4

    publisher = Publisher(topic, alice, task)
    publisher.start()
    cleanup.callback(publisher.stop_requested.set)
    for client in clients:
        client.wait_for(lambda c: len(task_events(c)) >= 25, 30)

    # SIGTERM node 1: readiness fails, its streams end over the window, it exits.
    assert node1.popen is not None
    sigterm = time.monotonic()
    node1.popen.send_signal(signal.SIGTERM)
    wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{port1}/readyz", timeout=1).status_code == 503,
        2,
        "node 1 /readyz to fail",
    )
    readyz_after = time.monotonic() - sigterm
    assert httpx.get(f"http://127.0.0.1:{port2}/readyz").status_code == 200
    grace = DRAIN_SECONDS + 5
    code = node1.popen.wait(grace + 2)
    exited_after = time.monotonic() - sigterm
    produced_at_exit = publisher.produced
    print(
        f"AC-12 node 1: /readyz 503 after {readyz_after:.2f} s; exit {code} after "
        f"{exited_after:.2f} s (grace {grace:.0f} s)"
    )
    assert code == 0
    assert exited_after < grace

    # Every client is back (through nginx, so on node 2) and live, then the publisher stops.
    for client in clients:
        client.wait_for(lambda c: max(seqs(c), default=-1) >= produced_at_exit + 25, 30)
    last = publisher.finish()
    for client in clients:
        client.wait_for(lambda c: last in seqs(c), 30)
    assert metric(port2, "taskstream_streams_open") == n_clients

    # Zero gaps and zero duplicates, per client.
    expected = set(range(last + 1))
    for i, client in enumerate(clients):
        got = seqs(client)
        assert len(got) == len(set(got)), f"client {i}: duplicates {len(got) - len(set(got))}"
        assert set(got) == expected, f"client {i}: missing {sorted(expected - set(got))[:10]}"
        assert got == sorted(got), f"client {i}: out of order"
    print(f"AC-12 {n_clients} clients each received {last + 1}/{last + 1} events, no duplicate")

    # The drained streams: node 1's, open before the signal, ended cleanly, spread out. A
    # connection that never became a stream (a TLS handshake that failed under load, then
    # retried) is not one of them.
    drained: list[Connection] = [
        conn
        for client in clients
        for conn in client.connections
        if conn.opened < sigterm and conn.ended is not None and conn.status == 200
    ]
    kinds = {conn.end for conn in drained}
    errors = [conn.error for conn in drained if conn.end != "eof"]
    assert len(drained) == on_node1, (len(drained), on_node1, errors[:3])
    assert kinds == {"eof"}, errors[:3]
    assert all(c.ended is not None and c.ended - sigterm <= DRAIN_SECONDS + 1 for c in drained)
    spread = check_spread([c.ended - sigterm for c in drained if c.ended], DRAIN_SECONDS)
    bounced = [
        conn
        for client in clients
        for conn in client.connections
        if conn.opened >= sigterm and conn.end == "eof" and conn.events == 0
    ]
    reconnects = [
        conn for client in clients for conn in client.connections if conn.opened >= sigterm
    ]
    resets = sum(e.event == "stream-reset" for c in clients for e in c.snapshot())
    print(
        f"AC-12 drain spread: {spread}; reconnect requests {len(reconnects)}, of which "
        f"{len(bounced)} answered by the draining node (empty 200); stream-resets {resets}; "
        f"node 2 duplicates dropped "
        f"{metric(port2, 'taskstream_stream_duplicates_dropped_total'):.0f}"
    )
    assert resets == 0
    assert spread["ks"] < spread["ks_limit"], spread
    assert spread["busiest_1s"] <= spread["n"] / 2, spread
    assert spread["span"] >= DRAIN_SECONDS / 2, spread
