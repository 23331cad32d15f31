"""Warm the Kafka broker up before anything is measured.

A broker started shortly before a run is still compiling its hot paths (the JVM's JIT). Under
the bench's load it then takes 50-70 % of the services' core instead of ~20 %, and its
produce → consume latency is three to four times the warm figure, for a minute or more.
Whichever target the bench measured first paid for it, and targets run in a fixed order:
Taskstream first. Measured here, the same code right after a broker restart and warm
(bench/notes.md): M3's Kafka floor 11.8-14.0 against 3.2-3.6 ms, M2's 250/s step p99
262-893 against 86-88 ms.

So before the first target this drives the broker the way the bench does: consumers that
fetch with ``fetch.wait.max.ms=10`` and commit, and a producer with ``linger.ms=0``. It
watches the broker in windows of ``window_s`` and stops once ``settled`` windows in a row
agree, both on produce → consume latency (p50 within ``agree``) and on the broker's CPU share
(within ``cpu_points``), or after ``max_s``. The windows go into the results, so a report can
show how warm the broker was.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

T_NS = re.compile(rb'"t_ns":\s*(\d+)')


class _Reader(threading.Thread):
    """A consumer that commits as it goes, as consume_events does; the first one times."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, name: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": name,
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "fetch.error.backoff.ms": 10,
            }
        )
        self.consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in range(partitions)])
        self.lock = threading.Lock()
        self.latencies_us: list[int] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        since_commit = 0
        while not self.stopping.is_set():
            # poll, not consume(n, timeout): a batch read waits out its timeout for n
            # records, which a paced flow never fills, and that wait is not Kafka's.
            msg = self.consumer.poll(0.1)
            if msg is None or msg.error() is not None:
                continue
            now = time.time_ns()
            found = T_NS.search(msg.value() or b"")
            if found:
                with self.lock:
                    self.latencies_us.append((now - int(found.group(1))) // 1000)
            since_commit += 1
            if since_commit >= 20:
                self.consumer.commit(asynchronous=True)
                since_commit = 0
        self.consumer.close()

    def take(self) -> list[int]:
        with self.lock:
            out, self.latencies_us = self.latencies_us, []
        return out


def warm_kafka(
    bootstrap: str,
    topic: str,
    cpu_seconds: Any,
    partitions: int = 3,
    readers: int = 3,
    rate: float = 50.0,
    window_s: float = 10.0,
    settled: int = 3,
    agree: float = 0.15,
    cpu_points: float = 10.0,
    max_s: float = 150.0,
) -> dict[str, Any]:
    """Drive the broker until it settles; ``cpu_seconds()`` is the broker's CPU so far."""
    t0 = time.monotonic()
    pool = [_Reader(bootstrap, topic, partitions, f"{topic}.{i}") for i in range(readers)]
    for reader in pool:
        reader.start()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": 1})
    p50_ms: list[float] = []
    cpu_pct: list[float] = []
    stable = False
    sent = 0
    while time.monotonic() - t0 < max_s and not stable:
        start, cpu_start = time.monotonic(), cpu_seconds()
        next_at = start
        while time.monotonic() - start < window_s:
            value = json.dumps({"t_ns": time.time_ns()}).encode()
            producer.produce(topic, value, key=str(sent % 97).encode())
            producer.poll(0)
            sent += 1
            next_at += 1.0 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
        elapsed = time.monotonic() - start
        cpu_pct.append(100 * (cpu_seconds() - cpu_start) / elapsed)
        lat = pool[0].take()
        p50_ms.append(statistics.median(lat) / 1000 if lat else float("inf"))
        stable = _settled(p50_ms[-settled:], cpu_pct[-settled:], settled, agree, cpu_points)
    producer.flush(5)
    for reader in pool:
        reader.stopping.set()
    for reader in pool:
        reader.join(5)
    return {
        "seconds": time.monotonic() - t0,
        "records": sent,
        "rate": rate,
        "readers": readers,
        "window_s": window_s,
        "window_p50_ms": p50_ms,
        "window_kafka_cpu_pct": cpu_pct,
        "stable": stable,
    }


def _settled(
    p50_ms: list[float], cpu_pct: list[float], n: int, agree: float, cpu_points: float
) -> bool:
    if len(p50_ms) < n:
        return False
    return (max(p50_ms) - min(p50_ms) <= agree * max(p50_ms)) and (
        max(cpu_pct) - min(cpu_pct) <= cpu_points
    )
