"""A process told to stop exits by its stop deadline, whatever blocks it (#10): a librdkafka
call can block for its socket timeout when a broker goes away mid-request, and a clean
stop would wait for it past the supervisor's SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.conftest import ROOT

BLOCKED = """
import time
from streaming.loop import StopFlag
flag = StopFlag("blocked", deadline=0.5).install()
print("ready", flush=True)
time.sleep(30)  # a call that ignores the flag (a Kafka commit waiting for a dead broker)
"""


def test_a_blocked_process_exits_by_its_stop_deadline_with_code_0() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKED],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == "ready"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(10)
    finally:
        proc.kill()
    assert code == 0
    assert time.monotonic() - started < 5
    assert "not stopped 0.5 s after being told to; exiting now" in proc.stderr.read()
