"""Taskstream benchmarks against peers: ``make bench`` (full) and ``make bench-quick``.

Runs every metric of issue #4 (M1-M7) for Taskstream under uvicorn (``manage.py serve``, as
documented) and daphne and for the
peers U (lean uvicorn app), G (Go net/http hub) and D (django-eventstream), in one invocation,
with the same load, payload and Redis hop. Raw results go to ``bench/.build/results-<mode>.json``;
``bench/report.py`` turns them into ``docs/benchmarks.md`` and PNG plots.

Pinning on this 2-core box: the server under test on CPU 1; the load client, the producer
(this process), the ingest (consume_events or the bridge), Redis, Kafka and PostgreSQL on CPU 0.
M6 (no server): the bare loop, the bridge and one consume_events process on CPU 1; two and three
consume_events processes of one group float over CPUs 0-1, shared with the services.
Everything stays on loopback; every process started here is stopped here. Before the first
target the Kafka broker is driven until it is warm (bench/warmup.py: a broker started minutes
before measured Taskstream, always first, at 3-4 times its warm latency).

M2 steps up to 4,000 events/s (full) show the targeted-delivery ceiling as a ratio to U; its
warm-up (one event per stream) is delivered in full before the first step, so no step counts
another's deliveries. M6
repeats each cell ``m6_reps`` times (the report shows the median and the range); a
consume_events cell stops repeating when one more repetition would end the run after
``m6_end_s`` (the report says so). M3, M7 and M1's highest passing step are repeated ``reps``
times too (``MODES``; ``bench/stats.py``). M7's parts (stalled, churn, dead peers) are in
``bench/m7.py``; its dead peers put a blackhole for 127.0.0.250 on ``lo`` (tc, as root) for
the seconds until the server's sockets to them are gone. Each target's phases' seconds are in
its ``phase_s``; ``--only-metrics`` runs some metrics only (to iterate on one).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from m7 import ReclaimWatcher, lift_blackhole, m7, m7_line, reclaim_line
from stats import best_step, median_run
from warmup import warm_kafka

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BUILD = BENCH / ".build"
# Where scripts/services keeps the services' pid files (its TS_SERVICES_DIR knob).
SERVICES = Path(os.environ.get("TS_SERVICES_DIR") or ROOT / ".services")
VENV = ROOT / ".venv" / "bin"
PY = str(VENV / "python")
CLK_TCK = os.sysconf("SC_CLK_TCK")
SECRET = "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
REDIS_URL = "redis://127.0.0.1:6380/2"
SERVER_CPU = "1"
OTHER_CPU = "0"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Sizes. "quick" must finish in < 3 min, "full" in < 15 min on the 2-core box.
# reps: repetitions of a headline cell (bench/stats.py: median, range, noisy): M3's window is
# split into reps steps; on the rep_targets (the servers the goals compare, and G: cheap) M1's
# highest passing step runs reps times and each M7 part is reps steps (elsewhere one step,
# saving ~40 s on daphne and D, whose M7 steps are backlog). M7: m7_s per step, churn streams
# opened at m7_churn_rate/s and held m7_churn_hold_s, dead peers watched up to m7_reclaim_s
# (alongside M2 and the rest), and at least m7_min_watch_s (waited for at the target's end).
# M6: m6_events per drain, m6_procs consume_events process counts, m6_reps repetitions per cell,
# m6_max_s bound on one drain, m6_end_s seconds into the run by which M6 should be done.
MODES: dict[str, dict[str, Any]] = {
    "quick": {
        "users": 1000,
        "m1_clients": 200,
        "m1_rates": [60],
        "m2_clients": 200,
        "m2_rates": [400],
        "step_s": 1.0,
        "reps": 1,
        "rep_targets": [],
        "m3_rate": 5,
        "m3_s": 2.0,
        "m7_rate": 10,
        "m7_s": 0.5,
        "m7_pad": 4096,
        "m7_churn_rate": 50,
        "m7_churn_hold_s": 0.5,
        "m7_reclaim_s": 15.0,
        "m7_min_watch_s": 10.0,
        "m5_clients": 200,
        "m5_missed": 2,
        "m4_sizes": [500],
        "m4_window": 1.0,
        "m4_settle": 0.5,
        "m4_open_s": 30.0,
        "m6_events": 10000,
        "m6_procs": [1, 2, 3],
        "m6_reps": 1,
        "m6_max_s": 3.0,
        "m6_end_s": 170.0,
        "warm_max_s": 40.0,
        "warm_window_s": 5.0,
        "wait_s": 3.0,
        "catch_up_s": 5.0,
    },
    "full": {
        "users": 1000,
        "m1_clients": 1000,
        "m1_rates": [10, 25, 50, 100],
        "m2_clients": 1000,
        "m2_rates": [250, 500, 1000, 2000, 4000],
        "step_s": 2.5,
        "reps": 3,
        "rep_targets": ["T_uv", "U", "G"],
        "m3_rate": 5,
        "m3_s": 10.0,
        "m7_rate": 10,
        "m7_s": 1.5,
        "m7_pad": 4096,
        "m7_churn_rate": 50,
        "m7_churn_hold_s": 1.0,
        "m7_reclaim_s": 30.0,
        "m7_min_watch_s": 10.0,
        "m5_clients": 1000,
        "m5_missed": 2,
        "m4_sizes": [1000, 5000, 10000],
        "m4_window": 3.0,
        "m4_settle": 1.0,
        "m4_open_s": 20.0,
        "m6_events": 60000,
        "m6_procs": [1, 2, 3],
        "m6_reps": 3,
        "m6_max_s": 10.0,
        "m6_end_s": 840.0,
        "warm_max_s": 150.0,
        "warm_window_s": 10.0,
        "wait_s": 5.0,
        "catch_up_s": 15.0,
    },
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def slab_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            return int(line.split()[1])
    return 0


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_kib(self.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 3.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Procs:
    """Every process the bench starts; ``stop_all`` ends them in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.items: list[Proc] = []

    def start(
        self,
        name: str,
        cmd: list[str],
        *,
        cpu: str,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        stdout_pipe: bool = False,
    ) -> Proc:
        log_path = self.log_dir / f"{name}.log"
        out = open(log_path, "wb")  # noqa: SIM115  # closed when the process ends
        popen = subprocess.Popen(
            ["taskset", "-c", cpu, *cmd],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE if stdout_pipe else out,
            stderr=out,
            start_new_session=True,
        )
        proc = Proc(name, popen, log_path)
        self.items.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.items):
            with contextlib.suppress(Exception):
                proc.stop()
        self.items.clear()


def wait_port(port: int, proc: Proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not listen on {port}:\n{proc.tail()}")


def wait_line(proc: Proc, pattern: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pattern in proc.log_path.read_text(errors="replace"):
            return
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name}: no {pattern!r} within {timeout}s:\n{proc.tail()}")


def read_json_line(proc: Proc, timeout: float) -> dict[str, Any]:
    """The last JSON line of a process that prints one when it is done."""
    assert proc.popen.stdout is not None
    try:
        out, _ = proc.popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.stop()
        return {}
    for line in reversed(out.decode().splitlines()):
        if line.startswith("{"):
            parsed: dict[str, Any] = json.loads(line)
            return parsed
    return {}


def wait_ready(proc: Proc, timeout: float = 30.0) -> None:
    assert proc.popen.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.popen.stdout.readline().decode()
        if line.strip() == "ready":
            return
        if not line and not proc.alive():
            break
    raise RuntimeError(f"{proc.name} not ready:\n{proc.tail()}")


# --------------------------------------------------------------------------- load client


class Client:
    def __init__(self, procs: Procs, name: str, port: int, path: str, tokens: Path) -> None:
        self.ctl_port = free_port()
        self.proc = procs.start(
            name,
            [
                str(BUILD / "loadclient"),
                "-addr",
                f"127.0.0.1:{port}",
                "-path",
                path,
                "-tokens",
                str(tokens),
                "-ctl",
                f"127.0.0.1:{self.ctl_port}",
                "-max-life",
                "20m",
            ],
            cpu=OTHER_CPU,
        )
        wait_port(self.ctl_port, self.proc, 10)

    def call(self, path: str, body: bytes | None = None) -> str:
        url = f"http://127.0.0.1:{self.ctl_port}{path}"
        method = "GET" if path.startswith("/stats") else "POST"
        req = urllib.request.Request(url, data=body, method=method)
        with OPENER.open(req, timeout=60) as resp:
            body: bytes = resp.read()
        return body.decode()

    def stats(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.call("/stats"))
        return parsed

    def open(self, n: int, first: int, count: int, stall: int = 0) -> None:
        self.call(f"/open?n={n}&from={first}&count={count}&stall={stall}")

    def wait_open(self, n: int, timeout: float) -> int:
        """Until ``n`` streams are open, or no stream opened for 3 s with none connecting."""
        deadline = time.monotonic() + timeout
        s = self.stats()
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            s = self.stats()
            if s["open"] >= n:
                break
            if s["open"] != last:
                last, last_change = s["open"], time.monotonic()
            elif time.monotonic() - last_change > 3 and s["connecting"] == 0:
                break
            time.sleep(0.1)
        return int(s["open"])

    def wait_events(self, expected: int, timeout: float, quiet: float = 1.0) -> dict[str, Any]:
        """Until ``expected`` events arrived, or nothing new for ``quiet`` s, or ``timeout``."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        s = self.stats()
        while time.monotonic() < deadline:
            s = self.stats()
            if s["events"] >= expected:
                break
            if s["events"] != last:
                last, last_change = s["events"], time.monotonic()
            elif time.monotonic() - last_change > quiet:
                break
            time.sleep(0.05)
        return s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------- producer


class Load:
    """Produces task.progress records per docs/events.md with ``seq`` and ``t_ns`` in data."""

    def __init__(self, bootstrap: str, tasks: dict[int, str]) -> None:
        from confluent_kafka import Producer

        # linger.ms=0 for the latency metric (M3); 5 ms for the throughput steps, because the
        # broker JVM costs ~0.5 core per 1,000 unbatched produce requests/s on this box.
        self.fast = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": 1})
        self.batched = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": 1})
        self.producer = self.batched
        self.tasks = tasks
        self.seq: dict[tuple[str, int], int] = {}

    def _value(self, topic: str, uid: int, pad: str) -> bytes:
        key = (topic, uid)
        seq = self.seq[key] = self.seq.get(key, 0) + 1
        data = {"progress": seq % 101, "message": "", "seq": seq, "t_ns": time.time_ns()}
        if pad:
            data["pad"] = pad
        body = {
            "event_id": str(uuid.uuid4()),
            "event_type": "task.progress",
            "version": 1,
            "occurred_at": datetime.now(UTC).isoformat(),
            "user_id": uid,
            "task_id": self.tasks[uid],
            "scope": "user",
            "data": data,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def paced(
        self,
        topic: str,
        users: list[int],
        rate: float,
        seconds: float,
        pad_bytes: int = 0,
        fast: bool = False,
    ) -> int:
        """``rate`` events/s for ``seconds``, round robin over ``users``; returns events sent."""
        self.producer = self.fast if fast else self.batched
        pad = "x" * pad_bytes
        start = time.monotonic()
        sent = 0
        total = int(rate * seconds)
        while sent < total:
            due = min(total, int(rate * (time.monotonic() - start)) + 1)
            while sent < due:
                uid = users[sent % len(users)]
                self.producer.produce(topic, self._value(topic, uid, pad), key=str(uid))
                sent += 1
            self.producer.poll(0)
            time.sleep(0.002)
        self.producer.flush(30)
        return sent

    def burst(self, topic: str, users: list[int], count: int) -> int:
        return self.send(topic, self.records(topic, users, count))

    def records(self, topic: str, users: list[int], count: int) -> list[tuple[bytes, str]]:
        """``count`` (value, key) pairs round robin over ``users``, built ahead of ``send``."""
        return [
            (self._value(topic, uid, ""), str(uid))
            for uid in (users[i % len(users)] for i in range(count))
        ]

    def send(self, topic: str, records: list[tuple[bytes, str]]) -> int:
        for i, (value, key) in enumerate(records):
            while True:
                try:
                    self.producer.produce(topic, value, key=key)
                    break
                except BufferError:  # the local queue is full (100k records): let it drain
                    self.producer.poll(0.1)
            if i % 1000 == 999:
                self.producer.poll(0)
        self.producer.flush(60)
        return len(records)


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    key: str
    label: str
    cmd: list[str]
    path: str
    ingest: str  # "taskstream" or "bridge-hub" or "bridge-des"
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT


def targets(port: int) -> list[Target]:
    uv = [
        str(VENV / "uvicorn"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--backlog",
        "4096",
    ]
    daphne_ep = [str(VENV / "daphne"), "-e", f"tcp:port={port}:interface=127.0.0.1:backlog=4096"]
    des = BENCH / "peers" / "des"
    return [
        Target(
            "T_uv",
            "Taskstream (uvicorn)",
            # The documented server: uvicorn with the read deadlines, TCP_USER_TIMEOUT and
            # the drain (realtime/management/commands/serve.py).
            [str(PY), "manage.py", "serve", "--port", str(port), "--backlog", "4096"],
            "/api/v1/events/stream",
            "taskstream",
            # Stopped between targets with nothing to hand over: no drain window.
            {"TASKSTREAM_DRAIN_SECONDS": "0"},
        ),
        Target(
            "T_daphne",
            "Taskstream (daphne)",
            [*daphne_ep, "-v", "0", "config.asgi:application"],
            "/api/v1/events/stream",
            "taskstream",
        ),
        Target(
            "U",
            "U: lean uvicorn app",
            [*uv, "--app-dir", str(BENCH / "peers"), "uvicorn_min:app"],
            "/events",
            "bridge-hub",
            {"BENCH_REDIS_URL": REDIS_URL, "BENCH_JWT_KEY": SECRET},
        ),
        Target(
            "G",
            "G: Go net/http hub",
            [
                str(BUILD / "gohub"),
                "-addr",
                f"127.0.0.1:{port}",
                "-redis",
                "127.0.0.1:6380",
                "-key",
                SECRET,
            ],
            "/events",
            "bridge-hub",
        ),
        Target(
            "D",
            "D: django-eventstream (daphne)",
            [*daphne_ep, "-v", "0", "des_asgi:application"],
            "/events/u{uid}/",
            "bridge-des",
            {
                "PYTHONPATH": str(des),
                "DJANGO_SETTINGS_MODULE": "des_settings",
                "BENCH_JWT_KEY": SECRET,
            },
            des,
        ),
    ]


# --------------------------------------------------------------------------- the run


class Phases:
    """``with phases("M3"): ...`` adds the block's seconds to ``out["M3"]``."""

    def __init__(self, out: dict[str, float]) -> None:
        self.out = out

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.out[name] = self.out.get(name, 0.0) + time.monotonic() - t0


class Bench:
    def __init__(self, mode: str, only: list[str], only_metrics: list[str] | None = None) -> None:
        self.mode = mode
        self.cfg = MODES[mode]
        self.only = only
        self.only_metrics = only_metrics or []
        self.run_id = f"{int(time.time())}"
        self.dir = BUILD / f"run-{mode}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.procs = Procs(self.dir)
        self.bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
        db = os.environ.get("DATABASE_URL", "postgres://taskstream@127.0.0.1:5433/taskstream")
        self.db_url = db.rsplit("/", 1)[0] + "/taskstream_bench"
        prefix = f"bench.{self.run_id}"
        self.topic_ts = f"{prefix}.ts.events"
        self.topic_peer = f"{prefix}.peer"
        self.topic_m6 = f"{prefix}.m6"
        self.topic_warm = f"{prefix}.warm"
        self.t_start = time.monotonic()
        self.all_topics = [
            self.topic_ts,
            f"{prefix}.ts.requests",
            f"{prefix}.ts.dlq",
            self.topic_peer,
            self.topic_m6,
            *(f"{self.topic_m6}.p{k}" for k in self.cfg["m6_procs"]),
            f"{prefix}.m6.requests",
            f"{prefix}.m6.dlq",
            self.topic_warm,
        ]
        self.ts_env = {
            "DJANGO_SECRET_KEY": SECRET,
            "DATABASE_URL": self.db_url,
            "REDIS_URL": REDIS_URL,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "TASKSTREAM_TOPIC_EVENTS": self.topic_ts,
            "TASKSTREAM_TOPIC_REQUESTS": f"{prefix}.ts.requests",
            "TASKSTREAM_TOPIC_DLQ": f"{prefix}.ts.dlq",
            "TASKSTREAM_CONSUMER_GROUP": f"{prefix}.ts",
            "JWT_ACCESS_SECONDS": "86400",
            "LOG_LEVEL": "WARNING",
            # Knobs of the stream code being written for issue #3 (ignored where absent):
            # the bench opens 1,000+ streams per user on purpose (M1, M4).
            "TASKSTREAM_MAX_STREAMS_PER_USER": "100000",
            "TASKSTREAM_STREAM_OPENS_PER_MINUTE": "10000000",
        }
        self.results: dict[str, Any] = {"mode": mode, "cfg": self.cfg, "targets": {}}
        self.pinned: list[tuple[int, set[int]]] = []
        self.kafka_pid = 0
        with contextlib.suppress(OSError, ValueError):
            self.kafka_pid = int((SERVICES / "kafka/kafka.pid").read_text().split()[0])

    def want(self, metric: str) -> bool:
        return not self.only_metrics or metric in self.only_metrics

    # ---- setup

    def setup(self) -> None:
        import psycopg

        admin_url = self.db_url.rsplit("/", 1)[0] + "/taskstream"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = 'taskstream_bench'"
            ).fetchone()
            if not found:
                conn.execute("CREATE DATABASE taskstream_bench")
        env = {**os.environ, **self.ts_env}
        subprocess.run(
            [PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
        )
        # Every run starts from the same database: an empty event log. The log of earlier
        # runs (hundreds of MB after a few) outgrew shared_buffers, and its random-UUID
        # index made each later run's ingest slower than the one before.
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute("TRUNCATE tasks_taskeventlog")
            conn.execute("VACUUM ANALYZE tasks_asynctask")
        # And from an empty Redis database (the bench's own): a server stopped without
        # leaving the bus group (killed, or a run cut short) stays a member until the
        # group expiry, two hours, and every later group_send copied each batch into its
        # channel too. After a day of runs, 19 dead members made M6 a quarter slower.
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        subprocess.run(
            [PY, str(BENCH / "setup_db.py"), str(self.cfg["users"]), str(self.dir)],
            cwd=ROOT,
            env=env,
            check=True,
        )
        self.tokens = self.dir / "tokens.txt"
        rows = [ln.split() for ln in (self.dir / "tasks.txt").read_text().splitlines()]
        self.tasks = {int(u): t for u, t in rows}
        self.users = sorted(self.tasks)
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=3, replication_factor=1) for t in self.all_topics]
        )
        for fut in futures.values():
            with contextlib.suppress(Exception):
                fut.result()
        self.load = Load(self.bootstrap, self.tasks)
        self.results["env"] = environment()

    def warm_up(self) -> None:
        """The broker warm before the first target (bench/warmup.py says why and how)."""
        pid = self.kafka_pid
        warm = warm_kafka(
            self.bootstrap,
            self.topic_warm,
            cpu_seconds=lambda: cpu_seconds(pid) if pid else 0.0,
            window_s=self.cfg["warm_window_s"],
            max_s=self.cfg["warm_max_s"],
        )
        self.results["warmup"] = warm
        windows = ", ".join(
            f"{ms:.1f} ms/{cpu:.0f} %"
            for ms, cpu in zip(warm["window_p50_ms"], warm["window_kafka_cpu_pct"], strict=True)
        )
        log(
            f"Kafka warm-up {warm['seconds']:.0f}s, p50/broker CPU per window: {windows}"
            + ("" if warm["stable"] else " (not settled)")
        )

    def pin_services(self) -> None:
        """Redis, Kafka and PostgreSQL on CPU 0 for the run (restored afterwards)."""
        pids: list[int] = []
        for pid_file in ("redis/redis.pid", "kafka/kafka.pid", "postgres/data/postmaster.pid"):
            path = SERVICES / pid_file
            with contextlib.suppress(OSError, ValueError):
                pids.append(int(path.read_text().split()[0]))
        postmaster = pids[-1] if pids else 0
        for proc_dir in Path("/proc").iterdir():
            if proc_dir.name.isdigit():
                with contextlib.suppress(OSError):
                    ppid = int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    if ppid == postmaster:
                        pids.append(int(proc_dir.name))
        for pid in pids:
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    tid = int(task.name)
                    with contextlib.suppress(OSError):
                        self.pinned.append((tid, os.sched_getaffinity(tid)))
                        os.sched_setaffinity(tid, {0})
        self.results["pinning"] = (
            f"server under test: taskset -c {SERVER_CPU}; load client, producer, ingest "
            f"(consume_events / bridge), Redis, Kafka, PostgreSQL: CPU {OTHER_CPU} "
            f"({len(self.pinned)} service threads re-pinned for the run); M6: 1 ingest process "
            f"on CPU {SERVER_CPU}, 2 and 3 consume_events processes on CPUs "
            f"{OTHER_CPU},{SERVER_CPU} with the services"
        )

    def unpin_services(self) -> None:
        for tid, mask in self.pinned:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, mask)
        self.pinned.clear()

    def cleanup_topics(self) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for fut in admin.delete_topics(self.all_topics, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                fut.result()

    # ---- ingest

    @contextlib.contextmanager
    def ingest(self, kind: str, target: str) -> Iterator[Proc]:
        if kind == "taskstream":
            env = {**self.ts_env, "LOG_LEVEL": "INFO"}
            # One log per target: each batch's stages and timings, to read a step's figures.
            proc = self.procs.start(
                f"consume_events-{target}",
                [PY, "manage.py", "consume_events"],
                cpu=OTHER_CPU,
                env=env,
            )
            wait_line(proc, "assigned " + self.topic_ts, 60)
        else:
            fmt = kind.split("-", 1)[1]
            proc = self.procs.start(
                f"bridge-{fmt}",
                [
                    PY,
                    str(BENCH / "bridge.py"),
                    "--bootstrap",
                    self.bootstrap,
                    "--topic",
                    self.topic_peer,
                    "--group",
                    f"bench.{self.run_id}.bridge",
                    "--redis",
                    REDIS_URL,
                    "--format",
                    fmt,
                ],
                cpu=OTHER_CPU,
                stdout_pipe=True,
            )
            wait_ready(proc)
        try:
            yield proc
        finally:
            proc.stop()

    # ---- one measured step

    def step(
        self,
        client: Client,
        server: Proc,
        ingest: Proc,
        topic: str,
        users: list[int],
        rate: float,
        seconds: float,
        receivers: int,
        pad: int = 0,
        fast: bool = False,
    ) -> dict[str, Any]:
        """Produce ``rate`` events/s for ``seconds``; each event has ``receivers`` streams."""
        client.call("/reset")
        cpu0 = (server.cpu(), client.proc.cpu(), ingest.cpu(), cpu_seconds(self.kafka_pid))
        rss0 = server.rss()
        t0 = time.time_ns()
        w0 = time.monotonic()
        sent = self.load.paced(topic, users, rate, seconds, pad, fast)
        expected = sent * receivers
        s = client.wait_events(expected, timeout=max(self.cfg["wait_s"], seconds), quiet=1.0)
        wall = time.monotonic() - w0
        cpu1 = (server.cpu(), client.proc.cpu(), ingest.cpu(), cpu_seconds(self.kafka_pid))
        delivered = int(s["events"])
        span = max(1e-3, (int(s["last_ns"]) - t0) / 1e9) if delivered else 0.0
        return {
            "rate": rate,
            "sent": sent,
            "expected": expected,
            "delivered": delivered,
            "lost": max(0, expected - delivered),
            "gaps": s["gaps"],
            "dups": s["dups"],
            "closed_by_server": s["closed_by_server"],
            "deliveries_per_s": delivered / span if span else 0.0,
            "offered_deliveries_per_s": rate * receivers,
            "p50_ms": s["lat_us"][0] / 1000,
            "p99_ms": s["lat_us"][2] / 1000,
            "p999_ms": s["lat_us"][3] / 1000,
            "max_ms": s["lat_us"][4] / 1000,
            "server_cpu_s": cpu1[0] - cpu0[0],
            "server_cpu_us_per_delivery": (cpu1[0] - cpu0[0]) * 1e6 / delivered
            if delivered
            else None,
            "client_cpu_pct": 100 * (cpu1[1] - cpu0[1]) / wall,
            "ingest_cpu_pct": 100 * (cpu1[2] - cpu0[2]) / wall,
            "server_cpu_pct": 100 * (cpu1[0] - cpu0[0]) / wall,
            "kafka_cpu_pct": 100 * (cpu1[3] - cpu0[3]) / wall,
            "rss_kib_before": rss0,
            "rss_kib_after": server.rss(),
            "wall_s": wall,
        }

    # ---- per target

    def run_target(self, t: Target, port: int) -> dict[str, Any]:
        cfg = self.cfg
        res: dict[str, Any] = {"label": t.label, "phase_s": {}}
        env = {**self.ts_env, **t.env} if t.ingest == "taskstream" else t.env
        server = self.procs.start(t.key, t.cmd, cpu=SERVER_CPU, env=env, cwd=t.cwd)
        wait_port(port, server)
        time.sleep(0.5)
        res["rss_kib_start"] = server.rss()
        topic = self.topic_ts if t.ingest == "taskstream" else self.topic_peer
        client = Client(self.procs, f"client-{t.key}", port, t.path, self.tokens)
        user0 = [self.users[0]]
        watcher: ReclaimWatcher | None = None
        phase = Phases(res["phase_s"])
        try:
            with self.ingest(t.ingest, t.key) as ingest:
                # M1 broadcast (one user, many streams), then M3 and M7 on the same streams.
                n1 = cfg["m1_clients"]
                with phase("M1 open"):
                    client.open(n1, 0, 1)
                    opened = client.wait_open(n1, 60)
                res["m1_open"] = opened
                log(f"{t.key}: M1 {opened}/{n1} streams open")
                self.load.paced(topic, user0, 10, 0.3)
                client.wait_events(3 * opened, 5)
                if self.want("M1"):
                    with phase("M1"):
                        res["m1"] = [
                            self.step(
                                client, server, ingest, topic, user0, r, cfg["step_s"], opened
                            )
                            for r in cfg["m1_rates"]
                        ]
                # Fresh streams for M3 and M7: a server that fell behind in the top step still
                # holds its backlog in the streams' buffers (it would land in M3's numbers),
                # and streams closed by overflow are not reopened by the client.
                with phase("M1 reopen"):
                    client.call("/closeall")
                    client.open(n1, 0, 1)
                    opened = client.wait_open(n1, 60)
                best = best_step(res.get("m1", []))
                if best and cfg["reps"] > 1 and t.key in cfg["rep_targets"]:
                    # The highest passing step again, on the fresh streams: M1's headline
                    # cells (max sustained, CPU-µs per delivery) are the median of reps.
                    with phase("M1 repeats"):
                        runs = [best] + [
                            self.step(
                                client,
                                server,
                                ingest,
                                topic,
                                user0,
                                best["rate"],
                                cfg["step_s"],
                                opened,
                            )
                            for _ in range(cfg["reps"] - 1)
                        ]
                    res["m1_best"] = {"rate": best["rate"], "runs": runs}
                if self.want("M3"):
                    with phase("M3"):
                        res["m3"] = self.m3(t, client, server, ingest, topic, opened)
                    log(f"{t.key}: M3 done; layer probe {res['m3']['layer']}")
                if self.want("M7"):
                    with phase("M7"):
                        # Repeated where the goals compare (rep_targets); one step per part
                        # elsewhere (daphne and D are saturated here: their steps are backlog).
                        reps = cfg["reps"] if t.key in cfg["rep_targets"] else 1
                        res["m7"], watcher = m7(self, client, server, ingest, topic, n1, port, reps)
                    log(f"{t.key}: M7 done: {m7_line(res['m7'])}")
                client.call("/closeall")
                if self.want("M2") or self.want("M5"):
                    # M2 targeted: one stream per user.
                    n2 = cfg["m2_clients"]
                    users = self.users[:n2]
                    with phase("M2 open"):
                        client.open(n2, 0, n2)
                        opened2 = client.wait_open(n2, 60)
                    res["m2_open"] = opened2
                    log(f"{t.key}: M2 {opened2}/{n2} streams open")
                    # The warm-up (one event per stream) is delivered in full before the
                    # first step: a step counts every delivery after its reset, so a
                    # warm-up tail would count as the step's (M2 at 250/s once "delivered"
                    # 529/s at a p99 of the warm-up's age).
                    client.call("/reset")
                    self.load.paced(topic, users, 2000, n2 / 2000)
                    res["m2_warmup_catch_up_s"] = self.wait_caught_up(topic, t.ingest)
                    warm = client.wait_events(n2, self.cfg["catch_up_s"], quiet=5.0)
                    res["m2_warmup_delivered"] = int(warm["events"])
                    if warm["events"] < n2:
                        log(f"{t.key}: M2 warm-up: {warm['events']}/{n2} delivered")
                if self.want("M2"):
                    with phase("M2"):
                        res["m2"] = [
                            self.step(client, server, ingest, topic, users, r, cfg["step_s"], 1)
                            for r in cfg["m2_rates"]
                        ]
                        res["m2_backlog_s"] = self.wait_caught_up(topic, t.ingest)
                    log(f"{t.key}: M2 done")
                if self.want("M5"):
                    with phase("M5"):
                        res["m5"] = self.m5(
                            client, topic, users, t.ingest, t.ingest == "taskstream"
                        )
                        m5 = res["m5"]
                        log(
                            f"{t.key}: M5 opened {m5['opened']}, caught up {m5['caught_up']} "
                            f"in {m5['all_caught_up_s']} s, first event "
                            f"{m5['all_first_event_s']} s, gaps {m5['gaps']} dups {m5['dups']} "
                            f"resumed {m5['resumed_header']}"
                        )
                        res["m5_backlog_s"] = self.wait_caught_up(topic, t.ingest)
                client.call("/closeall")
                if self.want("M4"):
                    with phase("M4"):
                        res["m4"] = self.m4(client, server)
                if watcher is not None:
                    # The target's other metrics were shorter than the watch (quick mode,
                    # --only-metrics): watch on for at least m7_min_watch_s since the
                    # vanishing (this kernel alone aborts their sockets after ~8 s).
                    watched = time.monotonic() - watcher.t_vanish
                    bound = cfg["m7_reclaim_s"] if self.only_metrics else cfg["m7_min_watch_s"]
                    with phase("M7 reclaim wait"):
                        watcher.join(max(0.0, bound - watched))
        finally:
            if watcher is not None:
                watcher.finish()  # before the server stops: its sockets are what it counts
                log(f"{t.key}: M7 dead peers: {reclaim_line(res['m7']['dead'])}")
            with contextlib.suppress(Exception):
                client.call("/quit")
            client.proc.stop()
            server.stop()
        return res

    def wait_caught_up(self, topic: str, ingest: str) -> float:
        """Wait until the ingest's group has committed the end of ``topic`` (no backlog left
        for the next metric); returns the seconds waited."""
        from confluent_kafka import Consumer, TopicPartition

        group = (
            self.ts_env["TASKSTREAM_CONSUMER_GROUP"]
            if ingest == "taskstream"
            else f"bench.{self.run_id}.bridge"
        )
        watcher = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        parts = [TopicPartition(topic, p) for p in range(3)]
        start = time.monotonic()
        timeout = self.cfg["catch_up_s"]
        try:
            ends = [watcher.get_watermark_offsets(p, timeout=5)[1] for p in parts]
            while time.monotonic() - start < timeout:
                done = watcher.committed(parts, timeout=5)
                if all(c.offset >= e for c, e in zip(done, ends, strict=True)):
                    break
                time.sleep(0.25)
        finally:
            watcher.close()
        return time.monotonic() - start

    def m3(
        self, t: Target, client: Client, server: Proc, ingest: Proc, topic: str, receivers: int
    ) -> dict[str, Any]:
        cfg = self.cfg
        secs = cfg["m3_s"]
        floor = self.procs.start(
            f"kfloor-{t.key}",
            [
                PY,
                str(BENCH / "kfloor.py"),
                "latency",
                "--bootstrap",
                self.bootstrap,
                "--topic",
                topic,
                "--group",
                f"bench.{self.run_id}.floor",
                "--seconds",
                str(secs + 3),
            ],
            cpu=OTHER_CPU,
            stdout_pipe=True,
        )
        # The floor of a consumer that commits state before it publishes (kfloor.py).
        stateful = self.procs.start(
            f"sfloor-{t.key}",
            [
                PY,
                str(BENCH / "kfloor.py"),
                "stateful",
                "--bootstrap",
                self.bootstrap,
                "--topic",
                topic,
                "--group",
                f"bench.{self.run_id}.sfloor",
                "--seconds",
                str(secs + 3),
                "--dsn",
                self.db_url,
                "--redis",
                REDIS_URL,
            ],
            cpu=OTHER_CPU,
            stdout_pipe=True,
        )
        if t.ingest == "taskstream":
            probe_cmd = ["channels", "--uid", str(self.users[0])]
        elif t.ingest == "bridge-des":
            probe_cmd = ["redis", "--channel", "events_channel"]
        else:
            probe_cmd = ["redis", "--channel", "bench:ev"]
        probe = self.procs.start(
            f"probe-{t.key}",
            [
                PY,
                str(BENCH / "probe.py"),
                *probe_cmd,
                "--redis",
                REDIS_URL,
                "--seconds",
                str(secs + 3),
            ],
            cpu=OTHER_CPU,
            # Taskstream's probe builds its layer from the server's settings and environment.
            env=self.ts_env if t.ingest == "taskstream" else None,
            stdout_pipe=True,
        )
        wait_ready(floor)
        wait_ready(stateful)
        wait_ready(probe)
        time.sleep(0.5)
        # The window in reps steps: "client" is their median (field by field), "runs" each.
        reps = cfg["reps"]
        runs = [
            self.step(
                client,
                server,
                ingest,
                topic,
                [self.users[0]],
                cfg["m3_rate"],
                secs / reps,
                receivers,
                fast=True,
            )
            for _ in range(reps)
        ]
        return {
            "client": median_run(runs),
            "runs": runs,
            "kafka": read_json_line(floor, 20),
            "stateful": read_json_line(stateful, 20),
            "layer": read_json_line(probe, 20),
        }

    def m5(
        self, client: Client, topic: str, users: list[int], ingest: str, replay: bool
    ) -> dict[str, Any]:
        """Reconnect storm. Every stream of the M2 set disconnects; ``m5_missed`` events per
        user are produced and ingested while they are away; then all reconnect at once (t0).

        With ``replay`` (Taskstream) each sends ``Last-Event-ID`` = the last ``id:`` it saw,
        and *caught up* = its user's seq reached the producer's last seq (every missed event
        received; gaps and duplicates counted across the reconnect). Without (U, G, D have no
        resume), one more event per user is produced once all are open, and *first event*
        = when the last stream received it.
        """
        n = len(users)
        missed = self.cfg["m5_missed"]
        client.call("/disconnect")
        self.load.burst(topic, users, missed * n)
        away_s = self.wait_caught_up(topic, ingest)
        targets = "".join(f"{uid} {self.load.seq[(topic, uid)]}\n" for uid in users)
        client.call(f"/storm?replay={int(replay)}", targets.encode())
        deadline = time.monotonic() + self.cfg["catch_up_s"]
        s = client.stats()
        while time.monotonic() < deadline:
            s = client.stats()
            if s["storm_opened"] + s["connect_errors"] >= n and (
                not replay or s["storm_caught_up"] >= s["storm_opened"]
            ):
                break
            time.sleep(0.05)
        all_open_s = s["storm_all_open_ns"] / 1e9 if s["storm_opened"] >= n else None
        if not replay:
            self.load.burst(topic, users, n)
            while time.monotonic() < deadline:
                s = client.stats()
                if s["storm_first_event"] >= s["storm_opened"]:
                    break
                time.sleep(0.05)
        return {
            "clients": n,
            "replay": replay,
            "missed_per_stream": missed,
            "ingest_while_away_s": away_s,
            "opened": s["storm_opened"],
            "all_open_s": all_open_s,
            "first_event": s["storm_first_event"],
            "all_first_event_s": s["storm_all_first_event_ns"] / 1e9
            if s["storm_first_event"] >= n
            else None,
            "caught_up": s["storm_caught_up"] if replay else None,
            "all_caught_up_s": s["storm_all_caught_up_ns"] / 1e9
            if replay and s["storm_caught_up"] >= n
            else None,
            "resumed_header": s["storm_resumed"],
            "resets": s["storm_resets"],
            "replayed_events": s["storm_replayed_events"],
            "gaps": s["gaps"],
            "dups": s["dups"],
            "connect_p50_ms": s["connect_us"][0] / 1000,
            "connect_p99_ms": s["connect_us"][2] / 1000,
            "connect_errors": s["connect_errors"],
        }

    def m4(self, client: Client, server: Proc) -> list[dict[str, Any]]:
        cfg = self.cfg
        out: list[dict[str, Any]] = []
        time.sleep(cfg["m4_settle"])
        rss_zero, slab_zero = server.rss(), slab_kib()
        have = 0
        for size in cfg["m4_sizes"]:
            client.open(size - have, have, len(self.users))
            t_open = time.monotonic()
            # Bounded: past m4_open_s the row says how many opened in that time.
            opened = client.wait_open(size, cfg["m4_open_s"])
            open_s = time.monotonic() - t_open
            have = size
            time.sleep(cfg["m4_settle"])
            c0, w0 = server.cpu(), time.monotonic()
            time.sleep(cfg["m4_window"])
            cpu = server.cpu() - c0
            wall = time.monotonic() - w0
            rss = server.rss()
            out.append(
                {
                    "clients": size,
                    "open": opened,
                    "open_s": open_s,
                    "open_limit_s": cfg["m4_open_s"],
                    "rss_kib": rss,
                    "rss_kib_zero": rss_zero,
                    "rss_per_conn_kib": (rss - rss_zero) / max(1, opened),
                    "slab_per_conn_kib": (slab_kib() - slab_zero) / max(1, opened),
                    "idle_cpu_us_per_s_per_conn": cpu * 1e6 / wall / max(1, opened),
                    "connect_errors": client.stats()["connect_errors"],
                }
            )
            log(f"M4 {size}: open {opened}, rss {rss / 1024:.0f} MiB")
        client.call("/closeall")
        return out

    # ---- M6

    def m6(self) -> dict[str, Any]:
        """Ingest throughput with no clients. The bare loop and the bridge drain ``m6_events``
        pre-filled records with a fresh group per repetition; ``consume_events`` runs as 1, 2
        and 3 processes of one group (``m6_taskstream``). Every cell keeps each repetition;
        the report shows the median and the range."""
        cfg = self.cfg
        n = cfg["m6_events"]
        reps = cfg["m6_reps"]
        log(f"M6: pre-filling {self.topic_m6} with {n} events")
        self.load.burst(self.topic_m6, self.users, n)
        res: dict[str, Any] = {
            "events": n,
            "reps": reps,
            "max_s": cfg["m6_max_s"],
        }
        for name, script, extra in (
            ("bare", "kfloor.py", ["drain"]),
            ("bridge", "bridge.py", ["--redis", REDIS_URL]),
        ):
            runs = []
            for rep in range(reps):
                proc = self.procs.start(
                    f"m6-{name}-{rep}",
                    [
                        PY,
                        str(BENCH / script),
                        *extra,
                        "--bootstrap",
                        self.bootstrap,
                        "--topic",
                        self.topic_m6,
                        "--group",
                        f"bench.{self.run_id}.m6{name}.{rep}",
                        "--count",
                        str(n),
                    ],
                    cpu=SERVER_CPU,
                    stdout_pipe=True,
                )
                out = read_json_line(proc, 120)
                runs.append(
                    out | {"per_s": out.get("records", 0) / max(1e-6, out.get("seconds", 1))}
                )
            res[name] = {"runs": runs, "pinning": f"CPU {SERVER_CPU}"}
        counts = cfg["m6_procs"]
        res["taskstream"] = [
            self.m6_taskstream(k, n, reps, len(counts) - i - 1) for i, k in enumerate(counts)
        ]
        res["reps_cut"] = any(c.get("reps_cut") for c in res["taskstream"])
        return res

    def m6_taskstream(self, procs: int, n: int, reps: int, cells_after: int) -> dict[str, Any]:
        """``procs`` ``consume_events`` processes in one fresh group on a fresh 3-partition
        topic. Once the group is stable (every partition assigned) the processes are stopped
        (SIGSTOP), ``n`` events are produced, and they are continued (SIGCONT): each repetition
        drains a pre-filled backlog with no start-up and no rebalance in it. events/s = events
        committed ÷ seconds from SIGCONT to the last commit; CPU = the processes' CPU over the
        same interval, summed. A drain stops after ``m6_max_s`` once a tenth of the events are
        committed, or at 3 x ``m6_max_s`` (the rate is then over what was committed)."""
        from confluent_kafka import Consumer, TopicPartition

        topic = f"{self.topic_m6}.p{procs}"
        group = f"bench.{self.run_id}.m6ts.p{procs}"
        prefix = f"bench.{self.run_id}.m6"
        env = {
            **self.ts_env,
            "LOG_LEVEL": "INFO",
            "TASKSTREAM_TOPIC_EVENTS": topic,
            "TASKSTREAM_TOPIC_REQUESTS": f"{prefix}.requests",
            "TASKSTREAM_TOPIC_DLQ": f"{prefix}.dlq",
            "TASKSTREAM_CONSUMER_GROUP": group,
        }
        # One process: alone on CPU 1, the services on CPU 0 (as every ingest-only row).
        # Several: free over both cores, which they share with Redis, Kafka and PostgreSQL.
        cpus = SERVER_CPU if procs == 1 else f"{OTHER_CPU},{SERVER_CPU}"
        res: dict[str, Any] = {
            "procs": procs,
            "pinning": f"CPU {cpus}" + (" (shared with the services)" if procs > 1 else ""),
            "runs": [],
        }
        workers = [
            self.procs.start(
                f"m6-consume_events-p{procs}-{i}",
                [PY, "manage.py", "consume_events"],
                cpu=cpus,
                env=env,
            )
            for i in range(procs)
        ]
        watcher = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        parts = [TopicPartition(topic, p) for p in range(3)]

        def committed() -> int:
            return sum(max(0, p.offset) for p in watcher.committed(parts, timeout=5))

        def signal_all(sig: int) -> None:
            for w in workers:
                with contextlib.suppress(OSError):
                    os.kill(w.pid, sig)

        try:
            self.wait_group_stable(group, procs, workers)
            rep_s = 0.0
            for rep in range(reps):
                # The run's time budget: one more repetition only if it, and one of each
                # later cell with its start-up, still end by m6_end_s.
                need = rep_s * (1 + cells_after) + 12 * cells_after
                if rep and time.monotonic() - self.t_start + need > self.cfg["m6_end_s"]:
                    res["reps_cut"] = True
                    log(f"M6 consume_events x{procs}: {rep} rep(s), the time budget is spent")
                    break
                t_rep = time.monotonic()
                assigned0 = sum(w.log_path.read_text().count("assigned ") for w in workers)
                # Built before the stop: the processes stay stopped only while the records
                # are sent (well under the group's session timeout).
                records = self.load.records(topic, self.users, n)
                t_stop = time.monotonic()
                signal_all(signal.SIGSTOP)
                try:
                    base = committed()
                    self.load.send(topic, records)
                    end = sum(
                        watcher.get_watermark_offsets(p, timeout=5, cached=False)[1] for p in parts
                    )
                    cpu0 = sum(w.cpu() for w in workers)
                    t0 = time.monotonic()
                finally:
                    signal_all(signal.SIGCONT)
                last = (t0, base, cpu0)
                max_s = self.cfg["m6_max_s"]
                while all(w.alive() for w in workers):
                    done = committed()
                    if done > last[1]:
                        last = (time.monotonic(), done, sum(w.cpu() for w in workers))
                    if done >= end:
                        break
                    # Past max_s, once a tenth of the backlog is in (enough commits for a
                    # rate), or at 3 x max_s whatever is in.
                    waited = time.monotonic() - t0
                    if waited > 3 * max_s or (waited > max_s and done - base >= (end - base) / 10):
                        break
                    time.sleep(0.05)
                t1, done, cpu1 = last
                drained = done - base
                run = {
                    "records": drained,
                    "backlog": end - base,
                    "seconds": t1 - t0,
                    "per_s": drained / (t1 - t0) if drained else 0.0,
                    "cpu_us_per_event": (cpu1 - cpu0) * 1e6 / drained if drained else None,
                    "complete": done >= end,
                    "stopped_s": t0 - t_stop,
                    "rebalanced": sum(w.log_path.read_text().count("assigned ") for w in workers)
                    != assigned0,
                }
                if not all(w.alive() for w in workers):
                    run["error"] = "a consume_events process exited: " + next(
                        w.tail(3) for w in workers if not w.alive()
                    )
                res["runs"].append(run)
                rep_s = time.monotonic() - t_rep
                log(
                    f"M6 consume_events x{procs} rep {rep + 1}: {drained} of {end - base} in "
                    f"{t1 - t0:.1f}s = {run['per_s']:.0f}/s, "
                    f"{run['cpu_us_per_event'] or 0:.0f} CPU-us/event"
                )
                if "error" in run:
                    break
        except Exception as exc:
            res["error"] = repr(exc)
        finally:
            # Measured: SIGKILL instead of a graceful stop, which would first finish a batch
            # (seconds at the old speed); the topic and the group are this cell's alone.
            signal_all(signal.SIGKILL)
            for w in workers:
                w.popen.wait(10)
            watcher.close()
        return res

    def wait_group_stable(
        self, group: str, members: int, workers: list[Proc], timeout: float = 60.0
    ) -> None:
        """Until ``group`` is Stable with ``members`` members that hold all 3 partitions."""
        from confluent_kafka import ConsumerGroupState
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < deadline:
            for w in workers:
                if not w.alive():
                    raise RuntimeError(f"{w.name} exited:\n{w.tail()}")
            with contextlib.suppress(Exception):
                desc = admin.describe_consumer_groups([group])[group].result(timeout=5)
                held = sum(len(m.assignment.topic_partitions) for m in desc.members)
                state = f"{desc.state} with {len(desc.members)} members holding {held}"
                if (
                    desc.state == ConsumerGroupState.STABLE
                    and len(desc.members) == members
                    and held == 3
                ):
                    time.sleep(0.5)  # each member's first fetch of its (empty) partitions
                    return
            time.sleep(0.2)
        raise RuntimeError(f"group {group} not stable after {timeout:.0f}s: {state}")

    # ---- main

    def run(self) -> None:
        t_start = self.t_start = time.monotonic()
        lift_blackhole()  # left on lo by a run that was killed (M7's dead peers)
        self.pin_services()
        try:
            self.setup()
            self.results["setup_s"] = time.monotonic() - t_start
            log(f"setup done in {time.monotonic() - t_start:.0f}s")
            self.warm_up()
            for t in targets(18600):
                if self.only and t.key not in self.only:
                    continue
                t0 = time.monotonic()
                log(f"target {t.key}")
                try:
                    self.results["targets"][t.key] = self.run_target(t, 18600)
                except Exception as exc:
                    log(f"{t.key} failed: {exc!r}")
                    self.results["targets"][t.key] = {"label": t.label, "error": repr(exc)}
                finally:
                    self.procs.stop_all()
                self.results["targets"][t.key]["seconds"] = time.monotonic() - t0
                phases = self.results["targets"][t.key].get("phase_s", {})
                log(
                    f"target {t.key} done in {time.monotonic() - t0:.0f}s: "
                    + ", ".join(f"{k} {v:.0f}s" for k, v in phases.items())
                )
            if (not self.only or "M6" in self.only) and self.want("M6"):
                t0 = time.monotonic()
                try:
                    self.results["m6"] = self.m6()
                except Exception as exc:
                    log(f"M6 failed: {exc!r}")
                    self.results["m6"] = {"error": repr(exc)}
                self.results["m6_seconds"] = time.monotonic() - t0
        finally:
            lift_blackhole()
            self.procs.stop_all()
            self.unpin_services()
            with contextlib.suppress(Exception):
                self.cleanup_topics()
        self.results["runtime_s"] = time.monotonic() - t_start
        out = BUILD / f"results-{self.mode}.json"
        out.write_text(json.dumps(self.results, indent=1))
        log(f"results in {out} after {self.results['runtime_s']:.0f}s")


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "absent"


def environment() -> dict[str, Any]:
    import confluent_kafka
    import redis

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    governor = "n/a (no cpufreq)"
    gov = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if gov.exists():
        governor = gov.read_text().strip()
    redis_version = str(redis.Redis.from_url(REDIS_URL).info("server").get("redis_version"))
    go = subprocess.run(
        ["/usr/local/go/bin/go", "version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    kafka = "unknown"
    with contextlib.suppress(Exception):
        status = subprocess.run(
            ["scripts/services", "status", "kafka"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHON": PY},
            check=False,
        ).stdout
        m = re.search(r"kafka\s+\S+\s+pid \d+\s+(kafka [\d.]+)", status)
        kafka = m.group(1) if m else status.strip()
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--short", "--", "realtime", "tasks", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split("\n")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "governor": governor,
        "python": platform.python_version(),
        "packages": {
            name: _version(name)
            for name in (
                "Django",
                "channels",
                "channels-redis",
                "redis",
                "uvicorn",
                "uvloop",
                "httptools",
                "daphne",
                "Twisted",
                "confluent-kafka",
                "django-eventstream",
                "PyJWT",
            )
        },
        "librdkafka": confluent_kafka.libversion()[0],
        "redis_server": redis_version,
        "kafka": kafka,
        "go": go,
        "git": git,
        "dirty_core_files": len([d for d in dirty if d.strip()]),
        "fd_limit": subprocess.run(
            ["bash", "-c", "ulimit -n"], capture_output=True, text=True, check=False
        ).stdout.strip(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=list(MODES), default="quick")
    ap.add_argument("--only", nargs="*", default=[], help="target keys (T_uv U ...) and/or M6")
    ap.add_argument(
        "--m1-rates",
        nargs="+",
        type=float,
        help="M1's offered events/s steps instead of the mode's (quick: 60, far below the "
        "fan-out ceiling; e.g. 60 250 500 to find it in a short run)",
    )
    ap.add_argument(
        "--m1-clients",
        type=int,
        help="M1's streams (also M3's and M7's) instead of the mode's (full: 1000)",
    )
    ap.add_argument(
        "--only-metrics",
        nargs="+",
        choices=["M1", "M2", "M3", "M4", "M5", "M6", "M7"],
        help="run only these metrics (M1's streams are opened for M3 and M7 in any case)",
    )
    ap.add_argument(
        "--m4-sizes", nargs="+", type=int, help="M4's stream counts (full: 1000 5000 10000)"
    )
    args = ap.parse_args()
    if args.m4_sizes:
        MODES[args.mode]["m4_sizes"] = args.m4_sizes
    if args.m1_rates:
        MODES[args.mode]["m1_rates"] = args.m1_rates
    if args.m1_clients:
        MODES[args.mode]["m1_clients"] = args.m1_clients
    os.sched_setaffinity(0, {int(OTHER_CPU)})

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # runs the finally blocks: every child is stopped

    signal.signal(signal.SIGTERM, on_term)
    with one_bench_at_a_time():
        Bench(args.mode, args.only, args.only_metrics).run()


@contextlib.contextmanager
def one_bench_at_a_time() -> Iterator[None]:
    """Refuse to start while another bench runs on this machine (another checkout
    included): both would share the bench database, the layer's groups and the cores, and
    each would corrupt the other's figures (events of one run delivered to the other's
    streams of the same user ids, the event log truncated under a running consumer)."""
    import fcntl

    lock = open(Path(os.environ.get("TMPDIR", "/tmp")) / "taskstream-bench.lock", "w")  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit("another bench is running on this machine; wait for it to end")
    try:
        yield
    finally:
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
