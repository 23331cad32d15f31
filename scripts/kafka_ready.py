#!/usr/bin/env python3
"""Wait until a Kafka cluster answers metadata requests, then make sure topics exist.

    python scripts/kafka_ready.py --bootstrap 127.0.0.1:9092 --timeout 60 \
        --partitions 3 task.events task.requests task.events.dlq

Used by scripts/services and scripts/kafka_broker (and usable from tests). A real
client round trip is the only reliable readiness signal: the TCP port opens well before
the broker has joined its KRaft quorum and can serve metadata. Topics are created
because the brokers run with auto.create.topics.enable=false; topics that already exist
are left alone (whatever their partition count), so the command is idempotent. It
returns only once every listed topic has a leader for every partition, so a producer
started right after it does not hit LEADER_NOT_AVAILABLE.

Exit status: 0 ready, 1 deadline passed, 2 confluent_kafka is not installed.
Needs only the standard library and confluent-kafka.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

try:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic
except ImportError:  # pragma: no cover - depends on the interpreter used
    print(
        f"kafka_ready: confluent_kafka is not importable by {sys.executable}",
        file=sys.stderr,
    )
    sys.exit(2)


def log(msg: str) -> None:
    print(f"[kafka_ready] {msg}", file=sys.stderr, flush=True)


def topic_problem(md: Any, name: str) -> str | None:
    """Why topic `name` is not usable yet, or None if every partition has a leader."""
    topic = md.topics.get(name)
    if topic is None:
        return "missing"
    if topic.error is not None:
        return str(topic.error)
    if not topic.partitions:
        return "no partitions yet"
    leaderless = [p for p, meta in topic.partitions.items() if meta.leader < 0]
    if leaderless:
        return f"no leader for partitions {sorted(leaderless)}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True, help="host:port[,host:port...]")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
    parser.add_argument("--partitions", type=int, default=3, help="for topics created here")
    parser.add_argument("--replication-factor", type=int, default=1)
    parser.add_argument("topics", nargs="*", help="topics to create if missing")
    args = parser.parse_args()

    deadline = time.monotonic() + args.timeout
    last_error: object = "no answer yet"

    def remember_error(err: KafkaError) -> None:
        nonlocal last_error
        last_error = err

    # librdkafka logs every refused connection while the broker is still starting;
    # keep that out of the output and report only the last error if we give up.
    quiet = logging.getLogger("kafka_ready.librdkafka")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    config: dict[str, Any] = {
        "bootstrap.servers": args.bootstrap,
        "socket.connection.setup.timeout.ms": 3000,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 500,
        "error_cb": remember_error,
        "logger": quiet,
    }
    admin = AdminClient(config)

    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log(f"{args.bootstrap} not ready after {args.timeout:g}s: {last_error}")
            return 1
        try:
            md = admin.list_topics(timeout=max(0.5, min(remaining, 5.0)))
        except KafkaException as exc:
            last_error = exc.args[0] if exc.args else exc
            time.sleep(0.2)
            continue
        if not md.brokers:
            last_error = "metadata lists no brokers"
            time.sleep(0.2)
            continue

        problems = {t: topic_problem(md, t) for t in args.topics}
        problems = {t: p for t, p in problems.items() if p is not None}
        if not problems:
            topics = f"; topics: {' '.join(args.topics)}" if args.topics else ""
            log(f"{args.bootstrap} ready ({len(md.brokers)} broker(s){topics})")
            return 0
        last_error = "; ".join(f"{t}: {p}" for t, p in problems.items())

        missing = [t for t, p in problems.items() if p == "missing"]
        if missing:
            futures = admin.create_topics(
                [
                    NewTopic(
                        t,
                        num_partitions=args.partitions,
                        replication_factor=args.replication_factor,
                    )
                    for t in missing
                ],
                operation_timeout=max(1.0, min(deadline - time.monotonic(), 10.0)),
                request_timeout=max(1.0, min(deadline - time.monotonic(), 15.0)),
            )
            for name, future in futures.items():
                try:
                    future.result()
                    log(f"created topic {name} ({args.partitions} partitions)")
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else exc
                    # Created meanwhile by someone else: exactly what we wanted.
                    if (
                        isinstance(err, KafkaError)
                        and err.code() == KafkaError.TOPIC_ALREADY_EXISTS
                    ):
                        continue
                    last_error = f"creating {name}: {err}"
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
