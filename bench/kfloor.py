"""Bare confluent-kafka consumers: the Kafka floor of M3 and the bare consume loop of M6.

``latency``: assign at the end of the topic and record produce → consume latency (``t_ns`` in
the value) for ``--seconds``; prints p50/p99/p99.9 in µs.
``drain``: read ``--count`` records from the start with ``consume(500)`` and do nothing else;
prints the rate.
``stateful``: M3's floor for a consumer that commits state before it publishes, the order
Taskstream's delivery rule sets (tasks/delivery.py): per record, a PostgreSQL transaction in
two round trips as ``tasks.postgres`` sends them (BEGIN and a locked read of the task; the
log row, the task's update and COMMIT), then one Redis PUBLISH; a subscriber thread records
produce → receipt. Its tables (``bench_floor_*``, a log with Taskstream's four indexes) are
its own. No adapter, no hot store, no channel layer, no threads between the steps: what is
left is the round trips themselves.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

T_NS = re.compile(rb'"t_ns":\s*(\d+)')


def pct(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return float(values[min(len(values) - 1, int(q * len(values)))])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["latency", "drain", "stateful"])
    ap.add_argument("--dsn", default="", help="stateful: PostgreSQL")
    ap.add_argument("--redis", default="", help="stateful: Redis")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--count", type=int, default=0)
    args = ap.parse_args()
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "fetch.error.backoff.ms": 10,
        }
    )
    start = 0 if args.mode == "drain" else OFFSET_END
    consumer.assign([TopicPartition(args.topic, p, start) for p in range(args.partitions)])
    if args.mode == "stateful":
        out = stateful(consumer, args)
        consumer.close()
        print(json.dumps(out), flush=True)
        return
    print("ready", flush=True)
    if args.mode == "latency":
        lat: list[int] = []
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                m = T_NS.search(msg.value() or b"")
                if m:
                    lat.append((time.time_ns() - int(m.group(1))) // 1000)
        out = {"count": len(lat), **{k: pct(lat, q) for k, q in (("p50", 0.5), ("p99", 0.99))}}
        out["p999"] = pct(lat, 0.999)
    else:
        seen, first = 0, 0.0
        deadline = time.monotonic() + 300
        while seen < args.count and time.monotonic() < deadline:
            batch = consumer.consume(500, 0.2)
            if batch and not first:
                first = time.monotonic()
            seen += sum(1 for m in batch if m.error() is None)
        out = {"records": seen, "seconds": time.monotonic() - first}
    consumer.close()
    print(json.dumps(out), flush=True)


_TABLES = """
CREATE TABLE IF NOT EXISTS bench_floor_task (id uuid PRIMARY KEY, progress integer NOT NULL,
    updated_at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS bench_floor_log (id bigserial PRIMARY KEY, event_id uuid UNIQUE,
    task_id uuid NOT NULL REFERENCES bench_floor_task (id), source text NOT NULL,
    part integer NOT NULL, "offset" bigint NOT NULL, data jsonb NOT NULL);
CREATE INDEX IF NOT EXISTS bench_floor_log_task ON bench_floor_log (task_id);
-- The position with the topic's epoch, as TaskEventLog's (tasks/migrations/0007); a
-- bench database from before it had a unique (source, part, "offset") in its place.
ALTER TABLE bench_floor_log ADD COLUMN IF NOT EXISTS epoch text NOT NULL DEFAULT '';
ALTER TABLE bench_floor_log DROP CONSTRAINT IF EXISTS bench_floor_log_source_part_offset_key;
CREATE UNIQUE INDEX IF NOT EXISTS bench_floor_log_position
    ON bench_floor_log (source, part, "offset", epoch);
"""


def stateful(consumer: Any, args: argparse.Namespace) -> dict[str, Any]:
    import psycopg
    import redis

    db = psycopg.connect(args.dsn, autocommit=True)
    db.execute(_TABLES)
    task = str(uuid.uuid4())
    epoch = uuid.uuid4().hex[:22]  # a topic id's length, new per run (offsets repeat)
    db.execute("INSERT INTO bench_floor_task VALUES (%s, 0, now())", [task])
    channel = f"bench:floor:{uuid.uuid4().hex}"
    publisher = redis.Redis.from_url(args.redis)
    pubsub = redis.Redis.from_url(args.redis).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    lat: list[int] = []

    def receive() -> None:
        while True:
            msg = pubsub.get_message(timeout=1.0)
            if msg is None:
                continue
            if msg["data"] == b"end":
                return
            lat.append((time.time_ns() - int(msg["data"])) // 1000)

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    print("ready", flush=True)
    deadline = time.monotonic() + args.seconds
    with db.cursor() as cur:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None or msg.error() is not None:
                continue
            m = T_NS.search(msg.value() or b"")
            if not m:
                continue
            # Literals in the text, one execute per round trip, as tasks.postgres does.
            data = json.dumps({"t_ns": int(m.group(1))}).replace("'", "''")
            cur.execute(
                f"BEGIN; SELECT progress FROM bench_floor_task WHERE id = '{task}' "
                "FOR NO KEY UPDATE"
            )
            cur.execute(
                "INSERT INTO bench_floor_log "
                '(event_id, task_id, source, part, "offset", epoch, data) '
                f"VALUES ('{uuid.uuid4()}', '{task}', '{msg.topic()}', {msg.partition()}, "
                f"{msg.offset()}, '{epoch}', '{data}'); "
                "UPDATE bench_floor_task SET progress = progress + 1, "
                f"updated_at = now() WHERE id = '{task}'; COMMIT"
            )
            publisher.publish(channel, m.group(1))
    publisher.publish(channel, b"end")
    receiver.join(5)
    db.execute("DELETE FROM bench_floor_log WHERE task_id = %s", [task])
    db.execute("DELETE FROM bench_floor_task WHERE id = %s", [task])
    return {"count": len(lat), **{k: pct(lat, q) for k, q in (("p50", 0.5), ("p99", 0.99))}}


if __name__ == "__main__":
    main()
