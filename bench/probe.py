"""The layer-stage probe of M3: produce → "the event is in the server's ingress" latency.

``channels``: joins the bus group that carries ``uid`` on a channel of its own (one more
member besides the server's hub) and timestamps each layer message, as the hub would see it.
The layer is built from the server's own settings (``CHANNEL_LAYERS`` of config.settings,
same environment), so the key prefix (``{TASKSTREAM_REDIS_PREFIX}:asgi``) and the rest match:
a layer built by hand without the prefix joins a group the server never sends to.
``redis``: subscribes to the peers' pub/sub channel. Prints p50/p99/p99.9 in µs after
``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

# Matches inside plain JSON and inside JSON-in-a-JSON-string (django-eventstream's message).
T_NS = re.compile(rb'\\?"t_ns\\?":\s*(\d+)')


def pct(values: list[int], q: float) -> float:
    values = sorted(values)
    return float(values[min(len(values) - 1, int(q * len(values)))]) if values else 0.0


def server_layer_and_group(uid: int) -> tuple[Any, str]:
    """The channel layer exactly as the server configures it, and the user's group."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from channels.layers import get_channel_layer

    from realtime.bus import user_group

    layer = get_channel_layer()
    assert layer is not None
    return layer, user_group(uid)


async def channels_probe(uid: int, seconds: float, lat: list[int]) -> None:
    layer, group = server_layer_and_group(uid)
    channel = await layer.new_channel(prefix="bench.probe.")
    await layer.group_add(group, channel)
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                msg = await asyncio.wait_for(layer.receive(channel), deadline - time.monotonic())
            except TimeoutError:
                break
            now = time.time_ns()
            # The bus message shape belongs to realtime/bus.py; only the frames' t_ns matter.
            for m in T_NS.finditer(repr(msg).encode()):
                lat.append((now - int(m.group(1))) // 1000)
    finally:
        await layer.group_discard(group, channel)
        with contextlib.suppress(Exception):
            await layer.close_pools()


async def redis_probe(redis_url: str, channel: str, seconds: float, lat: list[int]) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, socket_timeout=3600)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        msg = await pubsub.get_message(timeout=max(0.01, deadline - time.monotonic()))
        if msg is None:
            continue
        now = time.time_ns()
        m = T_NS.search(msg["data"])
        if m:
            lat.append((now - int(m.group(1))) // 1000)
    await pubsub.aclose()
    await client.aclose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["channels", "redis"])
    ap.add_argument("--redis", default="redis://127.0.0.1:6380/2")
    ap.add_argument("--uid", type=int, default=0)
    ap.add_argument("--channel", default="bench:ev")
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    lat: list[int] = []
    if args.mode == "channels":
        asyncio.run(channels_probe(args.uid, args.seconds, lat))
    else:
        asyncio.run(redis_probe(args.redis, args.channel, args.seconds, lat))
    out = {"count": len(lat), "p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "p999": pct(lat, 0.999)}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
