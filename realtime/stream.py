"""``GET /api/v1/events/stream``: the user's task events as Server-Sent Events.

Channels' ``AsyncHttpConsumer`` ends the response when ``handle()`` returns and dispatches
one message at a time, so a ``handle()`` that loops forever never sees ``http.disconnect``
(django/channels#1249, #1302). This consumer instead sends the headers, starts a writer
task and returns to the receive loop: the disconnect arrives while the writer streams, and
cancels it. It never joins the channel layer itself; the process's hub does that once per
user (``realtime.hub``). No ORM call happens here: authentication is a stateless JWT check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer

from realtime import conf, metrics
from realtime.auth import AuthFailed, StreamUser, authenticate
from realtime.events import encode_sse
from realtime.hub import Hub, Subscriber, get_hub

logger = logging.getLogger(__name__)

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-store"),
    (b"x-accel-buffering", b"no"),
]


class EventStreamConsumer(AsyncHttpConsumer):  # type: ignore[misc]  # channels is untyped
    user: StreamUser
    subscriber: Subscriber
    hub: Hub
    writer: asyncio.Task[None] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Receive loop without a per-connection layer channel.

        ``AsyncConsumer.__call__`` would allocate a layer channel per browser and, since
        Channels 4.2, hop to a thread before every message; a stream needs neither.
        """
        self.scope = scope
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            await self._finish()

    async def dispatch(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.request":
            await self.http_request(message)
        elif message["type"] == "http.disconnect":
            await self.http_disconnect(message)

    async def http_request(self, message: dict[str, Any]) -> None:
        if message.get("more_body") or self.writer is not None:
            return
        if self.scope.get("method") not in ("GET", "HEAD"):
            await self._json_error(405, "Method not allowed; use GET.", "method_not_allowed")
            raise StopConsumer
        try:
            self.user = authenticate(self.scope)
        except AuthFailed as exc:
            metrics.STREAMS_REJECTED.labels(exc.code).inc()
            await self._json_error(
                401, exc.detail, exc.code, [(b"www-authenticate", exc.www_authenticate().encode())]
            )
            raise StopConsumer from None

        settings = conf.get()
        self.subscriber = Subscriber(self.user.user_id, settings.STREAM_QUEUE_SIZE)
        self.hub = get_hub()
        # Join before the first byte: an event produced after the client sees the stream
        # open is then guaranteed to reach this subscriber.
        await self.hub.attach(self.subscriber)
        await self.send_headers(status=200, headers=STREAM_HEADERS)
        opening = encode_sse(retry_ms=settings.RETRY_MS, comment="taskstream") + encode_sse(
            event="stream-open", data=json.dumps({"user_id": self.user.user_id})
        )
        await self.send_body(opening.encode(), more_body=True)
        metrics.STREAMS_OPENED.inc()
        self.writer = asyncio.create_task(self._write_loop(), name="sse-writer")

    async def http_disconnect(self, message: dict[str, Any]) -> None:
        raise StopConsumer

    async def _write_loop(self) -> None:
        settings = conf.get()
        heartbeat = settings.HEARTBEAT_SECONDS
        subscriber = self.subscriber
        reason = "server"
        try:
            while True:
                remaining = self.user.expires_at - time.time()
                if remaining <= 0:
                    reason = "token-expired"
                    break
                frames = await subscriber.next_frames(min(heartbeat, remaining))
                if time.time() >= self.user.expires_at:
                    # Nothing that arrives after the token expired is delivered.
                    reason = "token-expired"
                    break
                if frames:
                    await self.send_body("".join(frames).encode(), more_body=True)
                    metrics.STREAM_FRAMES_SENT.inc(len(frames))
                elif subscriber.closed_reason is None:
                    beat = encode_sse(event="heartbeat", data=json.dumps({"t": int(time.time())}))
                    await self.send_body(beat.encode(), more_body=True)
                    metrics.STREAM_HEARTBEATS.inc()
                if subscriber.closed_reason is not None:
                    reason = subscriber.closed_reason
                    break
            # Ending the 200 response cleanly makes EventSource reconnect with Last-Event-ID.
            await self.send_body(b"", more_body=False)
        except asyncio.CancelledError:
            reason = "client-gone"
            raise
        except Exception:
            reason = "error"
            logger.exception("stream of user %s failed", self.user.user_id)
            await self.send_body(b"", more_body=False)
        finally:
            metrics.STREAMS_CLOSED.labels(reason).inc()
            logger.debug("stream of user %s ended: %s", self.user.user_id, reason)

    async def _finish(self) -> None:
        if self.writer is not None:
            self.writer.cancel()
            # The writer logs its own failures; here it only has to be finished.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.writer
            await self.hub.detach(self.subscriber)

    async def _json_error(
        self,
        status: int,
        detail: str,
        code: str,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        body = json.dumps({"detail": detail, "code": code}).encode()
        headers = [(b"content-type", b"application/json"), *(extra_headers or [])]
        await self.send_response(status, body, headers=headers)
