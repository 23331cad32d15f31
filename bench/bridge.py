"""Kafka → Redis PUBLISH bridge: the ingest of peers U, G and D.

The same records Taskstream's ``consume_events`` reads, the same consumer settings (batches
of up to 500, ``fetch.wait.max.ms=10``), the same SSE frame (``id:`` = Kafka position), but
no database and no Channels layer: one pipelined ``PUBLISH`` per record per batch, then an
asynchronous commit at most every 0.5 s (and when idle). ``--format hub`` publishes
``b"<uid> <frame>"`` to ``bench:ev`` (U, G); ``--format des`` publishes django-eventstream's
own message to ``events_channel`` (D).
``--count N`` drains N records and prints the rate (M6), otherwise it runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import redis
from confluent_kafka import OFFSET_END, Consumer, TopicPartition


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--redis", default="redis://127.0.0.1:6380/2")
    ap.add_argument("--format", choices=["hub", "des"], default="hub")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=1800)
    args = ap.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
            "fetch.error.backoff.ms": 10,
        }
    )
    start = 0 if args.count else OFFSET_END
    consumer.assign([TopicPartition(args.topic, p, start) for p in range(args.partitions)])
    r = redis.Redis.from_url(args.redis)
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    deadline = time.monotonic() + args.max_seconds
    seen, first, last_commit, dirty = 0, 0.0, 0.0, False
    print("ready", flush=True)
    while not stop and time.monotonic() < deadline:
        # poll() returns as soon as one record is there; consume(n, 0) then takes what is
        # already fetched. (consume(500, 0.2) alone waits the whole 0.2 s unless 500 records
        # are buffered: up to 200 ms added latency at low rates.)
        first_msg = consumer.poll(0.2)
        if first_msg is None:
            if dirty:
                consumer.commit(asynchronous=True)
                dirty = False
            continue
        batch = [first_msg, *consumer.consume(499, 0)]
        pipe = r.pipeline(transaction=False)
        for msg in batch:
            if msg.error() is not None:
                continue
            body = json.loads(msg.value())
            envelope = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
            uid = body["user_id"]
            if args.format == "hub":
                frame = (
                    f"id: {msg.topic()}:{msg.partition()}:{msg.offset()}\n"
                    f"event: {body['event_type']}\ndata: {envelope}\n\n"
                )
                pipe.publish("bench:ev", f"{uid} {frame}")
            else:
                des = {
                    "channel": f"user-{uid}",
                    "event_type": body["event_type"],
                    "data": envelope,
                    "pub_id": None,
                }
                pipe.publish("events_channel", json.dumps(des))
        pipe.execute()
        dirty = True
        if time.monotonic() - last_commit > 0.5:
            consumer.commit(asynchronous=True)
            last_commit, dirty = time.monotonic(), False
        if not first:
            first = time.monotonic()
        seen += len(batch)
        if args.count and seen >= args.count:
            elapsed = time.monotonic() - first
            print(json.dumps({"records": seen, "seconds": elapsed}), flush=True)
            break
    consumer.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
