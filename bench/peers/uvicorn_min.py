"""Peer U: the lean-Python floor. A raw ASGI SSE fan-out app for uvicorn.

One Redis pub/sub subscription per process (channel ``BENCH_CHANNEL``, messages
``b"<user id> <sse frame>"``), fanned out in memory to per-connection bounded buffers.
Same SSE framing, heartbeat and JWT (HS256, ``user_id`` claim) check as Taskstream.
Run: ``uvicorn --app-dir bench/peers uvicorn_min:app``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from typing import Any

import jwt
import redis.asyncio as aioredis

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6380/0")
CHANNEL = os.environ.get("BENCH_CHANNEL", "bench:ev")
KEY = os.environ.get("BENCH_JWT_KEY", "")
LIMIT = int(os.environ.get("BENCH_QUEUE", "1000"))
HEARTBEAT = 15.0
HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


class Conn:
    __slots__ = ("closed", "frames", "wake")

    def __init__(self) -> None:
        self.frames: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.closed = False

    def offer(self, frame: bytes) -> None:
        if len(self.frames) >= LIMIT:
            self.closed = True  # overflow: end the stream, never thin it
        else:
            self.frames.append(frame)
        self.wake.set()


by_user: dict[bytes, set[Conn]] = {}
_listener: asyncio.Task[None] | None = None


async def listen() -> None:
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=86400)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(CHANNEL)
    while True:
        message = await pubsub.get_message(timeout=None)
        if message is None:
            continue
        uid, _, frame = message["data"].partition(b" ")
        for conn in tuple(by_user.get(uid, ())):
            conn.offer(frame)


def authenticate(scope: dict[str, Any]) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            try:
                claims = jwt.decode(value[7:].decode(), KEY, algorithms=["HS256"])
            except jwt.PyJWTError:
                return None
            return str(int(claims["user_id"])).encode()
    return None


async def writer(conn: Conn, send: Any) -> None:
    while not conn.closed:
        if not conn.frames:
            conn.wake.clear()
            try:
                await asyncio.wait_for(conn.wake.wait(), HEARTBEAT)
            except TimeoutError:
                beat = f'event: heartbeat\ndata: {{"t": {int(time.time())}}}\n\n'
                await send({"type": "http.response.body", "body": beat.encode(), "more_body": True})
                continue
        body = b"".join(conn.frames)
        conn.frames.clear()
        await send({"type": "http.response.body", "body": body, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _listener
    if scope["type"] != "http":
        return
    uid = authenticate(scope)
    if uid is None:
        body = json.dumps({"detail": "bad token", "code": "token_not_valid"}).encode()
        await send({"type": "http.response.start", "status": 401, "headers": HEADERS[1:]})
        await send({"type": "http.response.body", "body": body})
        return
    if _listener is None:
        _listener = asyncio.create_task(listen())
    conn = Conn()
    by_user.setdefault(uid, set()).add(conn)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    opening = f'retry: 3000\n: u-min\n\nevent: stream-open\ndata: {{"user_id": {uid.decode()}}}\n\n'
    await send({"type": "http.response.body", "body": opening.encode(), "more_body": True})
    task = asyncio.create_task(writer(conn, send))
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    finally:
        task.cancel()
        members = by_user.get(uid)
        if members is not None:
            members.discard(conn)
            if not members:
                del by_user[uid]
