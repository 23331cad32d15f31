"""Bare confluent-kafka consumers: the Kafka floor of M3 and the bare consume loop of M6.

``latency``: assign at the end of the topic and record produce → consume latency (``t_ns`` in
the value) for ``--seconds``; prints p50/p99/p99.9 in µs.
``drain``: read ``--count`` records from the start with ``consume(500)`` and do nothing else;
prints the rate.
"""

from __future__ import annotations

import argparse
import json
import re
import time

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

T_NS = re.compile(rb'"t_ns":\s*(\d+)')


def pct(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return float(values[min(len(values) - 1, int(q * len(values)))])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["latency", "drain"])
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
    start = OFFSET_END if args.mode == "latency" else 0
    consumer.assign([TopicPartition(args.topic, p, start) for p in range(args.partitions)])
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


if __name__ == "__main__":
    main()
