"""Profile ``consume_events`` with py-spy while it drains a pre-filled topic (M6 conditions).

``python bench/profile_ingest.py N`` (services up, env from ``scripts/services env``): pre-fills
a fresh topic with N bench events, runs ``consume_events`` on CPU 1 under
``py-spy record --format raw`` for its drain, and prints the hottest frames (own and total).
Output: ``bench/.build/profile-consume_events.txt`` (collapsed stacks).
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BUILD, PY, ROOT, Bench


def main(count: int) -> None:
    bench = Bench("quick", ["M6"])
    bench.setup()
    topic = bench.topic_m6
    try:
        bench.load.burst(topic, bench.users, count)
    except BaseException:
        bench.cleanup_topics()
        raise
    prefix = f"bench.{bench.run_id}.m6"
    env = {
        **os.environ,
        **bench.ts_env,
        "TASKSTREAM_TOPIC_EVENTS": topic,
        "TASKSTREAM_TOPIC_REQUESTS": f"{prefix}.requests",
        "TASKSTREAM_TOPIC_DLQ": f"{prefix}.dlq",
        "TASKSTREAM_CONSUMER_GROUP": f"{prefix}.prof",
    }
    out = BUILD / "profile-consume_events.txt"
    seconds = int(os.environ.get("PROFILE_SECONDS", "30"))
    cmd = [str(ROOT / ".venv/bin/py-spy"), "record", "--format", "raw", "-o", str(out),
           "--duration", str(seconds), "--rate", "200", "--subprocesses",
           # PROFILE_IDLE=1: waiting threads too (where the wall time goes, not the CPU).
           *(["--idle"] if os.environ.get("PROFILE_IDLE") else []), "--",
           "taskset", "-c", "1", PY, "manage.py", "consume_events"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        proc.wait(seconds + 30)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        bench.cleanup_topics()
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        samples += int(n)
        own[frames[-1]] += int(n)
        for f in set(frames):
            total[f] += int(n)
    print(f"{samples} samples")
    for name, counter in (("own", own), ("total", total)):
        print(f"-- top {name}")
        for frame, n in counter.most_common(25):
            print(f"{100 * n / samples:5.1f}%  {frame}")
    time.sleep(0)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
