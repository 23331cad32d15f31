"""M7: what misbehaving clients cost the others (``bench/run.py`` calls ``m7``).

The 1,000 streams of one user (M1's) receive ``m7_rate`` events/s with an ``m7_pad``-byte pad;
every part measures their p99 in ``reps`` steps of ``m7_s`` seconds and the server's RSS:

- **baseline**: nothing else.
- **stalled**: 10 more streams of that user that stop reading after ``stream-open`` (4 KiB
  receive buffer); closed by the client afterwards.
- **churn**: streams of the other bench users opened at ``m7_churn_rate``/s, each closed
  ``m7_churn_hold_s`` after its ``stream-open`` (about rate x hold of them open at once),
  started ``m7_churn_hold_s`` + 0.5 s before the steps so the churn is steady when they run.
- **dead**: 10 more streams of that user from their own source address, ``DEAD_SRC``; once
  open, every packet from or to that address is dropped on ``lo`` (``blackhole``), so the
  server's peers vanish with no FIN and no RST and never ACK again. A ``ReclaimWatcher``
  then counts the server's ESTABLISHED sockets to ``DEAD_SRC`` (``ss``) until none is left
  or ``m7_reclaim_s`` after the vanishing; it runs on while the bench goes on with M2 (the
  blackhole drops nothing else) and lifts the blackhole when it ends.

Why a blackhole and not a relay that stops forwarding: a relay's sockets stay alive, so the
server's kernel keeps getting ACKs (and window updates) from the relay: that is a client that
stops reading (the stalled part), not one that vanished. Only dropping the packets leaves the
server's TCP with unacknowledged data and retransmissions, as for a peer whose host died,
whose cable was pulled or whose NAT entry expired.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
import time
import urllib.request
from typing import Any

from stats import median_run

STALLED = 10
DEAD = 10
DEAD_SRC = "127.0.0.250"
# The blackhole's qdisc on lo: an HTB root with no default class (unclassified packets take
# its direct queue, unshaped) and one class whose pfifo holds 0 packets (drops all), which
# u32 filters send the dead address's packets to. This kernel has no netem and no gact.
HANDLE = "dead:"


def tc(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tc", *args], capture_output=True, text=True, check=check)


def blackhole_on(addr: str) -> None:
    lift_blackhole()
    tc(*f"qdisc add dev lo root handle {HANDLE} htb".split())
    tc(*f"class add dev lo parent {HANDLE} classid {HANDLE}1 htb rate 8bit".split())
    tc(*f"qdisc add dev lo parent {HANDLE}1 handle dee1: pfifo limit 0".split())
    for way in ("src", "dst"):
        rule = f"parent {HANDLE} protocol ip prio 1 u32 match ip {way} {addr}/32 flowid {HANDLE}1"
        tc("filter", "add", "dev", "lo", *rule.split())


def lift_blackhole() -> None:
    """Remove the blackhole's qdisc from lo if it is there (and nothing else); a machine
    without ``tc`` has none."""
    with contextlib.suppress(OSError):
        shown = tc("qdisc", "show", "dev", "lo", check=False).stdout
        if f"qdisc htb {HANDLE} root" in shown:
            tc("qdisc", "del", "dev", "lo", "root", "handle", HANDLE, check=False)


def blackhole_dropped() -> int:
    """Packets the blackhole dropped so far (its pfifo's counter)."""
    out = tc("-s", "qdisc", "show", "dev", "lo", check=False).stdout
    for block in out.split("qdisc ")[1:]:
        if block.startswith("pfifo dee1:"):
            with contextlib.suppress(ValueError, IndexError):
                return int(block.split("dropped ")[1].split(",")[0])
    return 0


def server_conns(port: int, peer: str) -> tuple[int, int]:
    """(ESTABLISHED sockets of the server on ``port`` whose peer is ``peer``, bytes in their
    send queues)."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    n = queued = 0
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3].rsplit(":", 1)[0] == peer:
            n += 1
            queued += int(fields[1])
    return n, queued


def close_reasons(port: int) -> dict[str, float]:
    """Taskstream's ``taskstream_streams_closed_total`` by reason from the server's /metrics
    (empty for a server without it: the peers)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (OSError, ValueError):
        return {}
    found = re.findall(r'^taskstream_streams_closed_total\{reason="([^"]+)"\} (\S+)$', text, re.M)
    return {reason: float(v) for reason, v in found}


class KernelProbe:
    """A bare TCP connection from the dead address, made before the blackhole, that sends
    ``size`` bytes once the blackhole is on: how long this machine's kernel takes to give up
    on unacknowledged data by itself, to read the server's reclaim time against."""

    def __init__(self, size: int = 43_000) -> None:
        self.size = size
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            self.peer = socket.create_connection(listener.getsockname(), 5, (DEAD_SRC, 0))
            self.sock, _ = listener.accept()
        self.sock.setblocking(False)
        self.t0 = 0.0
        self.dead_after: float | None = None

    def kick(self) -> None:
        self.t0 = time.monotonic()
        with contextlib.suppress(BlockingIOError):
            self.sock.send(b"x" * self.size)

    def poll(self) -> float | None:
        if self.dead_after is None and self.t0:
            try:
                self.sock.send(b"")
                failed = bool(self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
            except OSError:
                failed = True
            if failed:
                self.dead_after = time.monotonic() - self.t0
        return self.dead_after

    def close(self) -> None:
        self.sock.close()
        self.peer.close()


class ReclaimWatcher(threading.Thread):
    """Watches the dead peers' server sockets; writes what it saw into ``out``."""

    def __init__(
        self,
        port: int,
        t_vanish: float,
        bound_s: float,
        out: dict[str, Any],
        server: Any,
        probe: KernelProbe | None,
    ) -> None:
        super().__init__(daemon=True)
        self.probe = probe
        self.port, self.t_vanish, self.bound_s, self.out = port, t_vanish, bound_s, out
        self.server = server
        self.stop = threading.Event()
        self.reasons0 = close_reasons(port)
        self.rss0 = server.rss()

    def run(self) -> None:
        left = self.out["server_conns_at_vanish"]
        peak_queued = 0
        try:
            while not self.stop.is_set():
                left, queued = server_conns(self.port, DEAD_SRC)
                peak_queued = max(peak_queued, queued)
                waited = time.monotonic() - self.t_vanish
                probed = self.probe.poll() if self.probe else None
                if left == 0 and "reclaimed_s" not in self.out:
                    self.out["reclaimed_s"] = waited
                if ("reclaimed_s" in self.out and (probed or not self.probe)) or (
                    waited > self.bound_s
                ):
                    break
                self.stop.wait(0.25)
        finally:
            if self.probe:
                self.out["kernel_abort_s"] = self.probe.poll()
                self.probe.close()
            self.out["watched_s"] = time.monotonic() - self.t_vanish
            self.out["left"] = left
            self.out["peak_send_queue_kib"] = peak_queued / 1024
            self.out["dropped_packets"] = blackhole_dropped()
            lift_blackhole()
            # What ended the dead peers' streams (the server's reasons over the watch; the
            # 1,000 others' "client-gone" when the bench closed them is in there too).
            reasons = close_reasons(self.port)
            self.out["close_reasons"] = {
                k: v - self.reasons0.get(k, 0)
                for k, v in reasons.items()
                if v > self.reasons0.get(k, 0)
            }
            self.out["rss_change_over_watch_kib"] = self.server.rss() - self.rss0

    def finish(self) -> None:
        """Stop watching now (the target is about to stop its server) and lift the blackhole."""
        self.stop.set()
        self.join(10)
        lift_blackhole()


def m7(
    bench: Any, client: Any, server: Any, ingest: Any, topic: str, n: int, port: int, reps: int
) -> tuple[dict[str, Any], ReclaimWatcher | None]:
    """The four parts, ``reps`` steps each; returns the results and the dead part's running
    watcher."""
    cfg = bench.cfg
    user0 = [bench.users[0]]

    def steps() -> dict[str, Any]:
        runs = [
            bench.step(
                client, server, ingest, topic, user0, cfg["m7_rate"], cfg["m7_s"], n, cfg["m7_pad"]
            )
            for _ in range(reps)
        ]
        return median_run(runs) | {"runs": runs}

    res: dict[str, Any] = {"reps": reps, "phase_s": {}}
    settle = min(1.0, cfg["m7_s"])  # before an RSS reading after a part (quick: shorter)
    t = time.monotonic()
    res["baseline"] = steps()
    res["phase_s"]["baseline"] = time.monotonic() - t

    t = time.monotonic()
    client.call(f"/open?n={STALLED}&from=0&count=1&stall={STALLED}&tag=stall")
    client.wait_open(n + STALLED, 30)
    time.sleep(0.3)
    rss0 = server.rss()
    res["stalled"] = steps()
    time.sleep(settle)
    res["stalled"]["rss_growth_kib"] = server.rss() - rss0
    res["stalled_clients"] = STALLED
    client.call("/close?tag=stall")
    res["phase_s"]["stalled"] = time.monotonic() - t

    t = time.monotonic()
    rate, hold = cfg["m7_churn_rate"], cfg["m7_churn_hold_s"]
    others = len(bench.users) - 1
    rss0 = server.rss()
    client.call(f"/churn?rate={rate}&from=1&count={others}&hold_ms={int(hold * 1000)}")
    time.sleep(hold + 0.5)
    c0, t0 = client.stats(), time.monotonic()
    churn = steps()
    c1, span = client.stats(), time.monotonic() - t0
    rss_during = server.rss()
    client.call("/churn?rate=0")  # returns once every churn stream has ended
    time.sleep(settle)
    churn |= {
        "rate": rate,
        "hold_s": hold,
        "opened_per_s": (c1["churn_opened"] - c0["churn_opened"]) / span,
        "open_errors": c1["churn_errors"],
        "skipped": c1["churn_skipped"],
        "open_p50_ms": c1["churn_open_us"][0] / 1000,
        "open_p99_ms": c1["churn_open_us"][2] / 1000,
        "rss_growth_kib": rss_during - rss0,
        "rss_after_kib": server.rss() - rss0,
    }
    res["churn"] = churn
    res["phase_s"]["churn"] = time.monotonic() - t

    t = time.monotonic()
    client.call(f"/open?n={DEAD}&from=0&count=1&src={DEAD_SRC}&tag=dead")
    client.wait_open(n + DEAD, 30)
    time.sleep(0.3)
    at_vanish, _ = server_conns(port, DEAD_SRC)
    rss0 = server.rss()
    probe = None
    try:
        probe = KernelProbe()
        blackhole_on(DEAD_SRC)
    except (OSError, subprocess.CalledProcessError) as exc:
        lift_blackhole()
        if probe:
            probe.close()
        res["dead"] = {"error": f"no blackhole: {exc!r}"}
        return res, None
    t_vanish = time.monotonic()
    probe.kick()
    dead = steps()
    dead |= {
        "clients": DEAD,
        "server_conns_at_vanish": at_vanish,
        "rss_growth_kib": server.rss() - rss0,
        "reclaim_bound_s": cfg["m7_reclaim_s"],
    }
    res["dead"] = dead
    res["phase_s"]["dead"] = time.monotonic() - t
    watcher = ReclaimWatcher(port, t_vanish, cfg["m7_reclaim_s"], dead, server, probe)
    watcher.start()
    return res, watcher


def m7_line(res: dict[str, Any]) -> str:
    """One log line: each part's others' p99 (median) and the dead part's sockets."""
    parts = [
        f"{name} p99 {res[name]['p99_ms']:.0f} ms"
        for name in ("baseline", "stalled", "churn", "dead")
        if "p99_ms" in res.get(name, {})
    ]
    churn = res.get("churn", {})
    if "opened_per_s" in churn:
        parts.append(f"churn {churn['opened_per_s']:.0f} opens/s, {churn['open_errors']} errors")
    return "; ".join(parts)


def reclaim_line(dead: dict[str, Any]) -> str:
    kernel = f" (a bare socket died after {dead.get('kernel_abort_s')} s)"
    if "reclaimed_s" in dead:
        n, s = dead["server_conns_at_vanish"], dead["reclaimed_s"]
        return f"all {n} reclaimed {s:.1f} s after vanishing{kernel}; {dead.get('close_reasons')}"
    return kernel + (
        f"{dead.get('left')} of {dead.get('server_conns_at_vanish')} still ESTABLISHED on the "
        f"server after {dead.get('watched_s', 0):.1f} s"
    )
