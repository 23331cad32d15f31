"""``GET /api/v1/events/stream``: the user's task events as Server-Sent Events.

Channels' ``AsyncHttpConsumer`` ends the response when ``handle()`` returns and dispatches
one message at a time, so a ``handle()`` that loops forever never sees ``http.disconnect``
(django/channels#1249, #1302). This consumer instead sends the headers, starts a writer
task and returns to the receive loop: the disconnect arrives while the writer streams, and
cancels it. It never joins the channel layer itself; the process's hub does that once per
user (``realtime.hub``). No ORM call happens here: authentication is a stateless JWT check.

Opening: join the hub first (live events queue from then on), read the hot store in one
round trip (the open's count and lease, and what the resume needs: ``realtime.store_open``),
plan the resume from that (or from a time, ``?since=``), then start the writer
(``realtime.writer``), which replays and goes live. The staff scope (``realtime.staff``) is
a subclass that overrides who may open it, what it subscribes to and how it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any, NoReturn

import structlog
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from realtime.admission import Refused, admit, open_query
from realtime.auth import AuthFailed, StreamUser, authenticate
from realtime.hub import Hub, get_hub
from realtime.inbox import Subscriber
from realtime.leases import lease_keeper
from realtime.replay.kafka import Unfillable, get_kafka_replayer
from realtime.replay.resume import ResumePlan, ResumeRefused, plan_resume, plan_since
from realtime.request import USER_SCOPE, BadRequest, StreamRequest, announces_body, parse_request
from realtime.store import get_store
from realtime.store_open import OpenQuery, OpenView, read_open
from realtime.writer import StreamWriter
from streaming import conf, metrics, tracing
from streaming.events import encode_sse

logger = logging.getLogger(__name__)
log = structlog.get_logger(__name__)

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-store"),
    (b"x-accel-buffering", b"no"),
]
RESUMED_FROM_HEADER = b"taskstream-resumed-from"
# A finished stream's Redis clean-up (leave the layer group, release the lease) gets this
# long; the lease's TTL and channels-redis's group expiry cover what it could not do.
CLEANUP_SECONDS = 1.0


class EventStreamConsumer(StreamWriter, AsyncHttpConsumer):  # type: ignore[misc]  # channels is untyped
    scope_name = USER_SCOPE  # the ``scope`` parameter this consumer serves
    hub: Hub
    request: StreamRequest
    writer: asyncio.Task[None] | None = None
    attached = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Receive loop without a per-connection layer channel.

        ``AsyncConsumer.__call__`` would allocate a layer channel per browser and, since
        Channels 4.2, hop to a thread before every message; a stream needs neither.
        Once the stream runs, the consumer ends with whichever comes first: the client's
        disconnect, or the writer finishing (a clean end, or a client too slow to take
        its writes: returning then makes the server drop the connection, so a dead peer
        holds nothing).
        """
        self.scope = scope
        self.base_send = send
        try:
            # Decided from the headers alone, before asking for the body: the server
            # would hold receive() until a body the client announced arrives.
            await self.http_request({"type": "http.request", "more_body": announces_body(scope)})
            assert self.writer is not None  # http_request either started it or raised
            await _until_disconnected_or_ended(receive, self.writer)
        except StopConsumer:
            pass
        finally:
            await self._finish()

    async def http_request(self, message: dict[str, Any]) -> None:
        # Everything is decided from the headers, at their arrival: a request that also
        # announces a body is refused instead of waited for (a client sending nothing
        # more would hold the connection; the server bounds it too, realtime/server.py).
        if self.scope.get("method") not in ("GET", "HEAD"):
            await self._refuse(405, "method_not_allowed", "Use GET.")
        try:
            self.user = await self._authenticate()
            structlog.contextvars.bind_contextvars(user_id=self.user.user_id)
        except AuthFailed as exc:
            auth = [(b"www-authenticate", exc.www_authenticate().encode())]
            await self._refuse(401, exc.code, exc.detail, auth)
        if message.get("more_body"):
            await self._refuse(400, "body_not_allowed", "The stream takes no request body.")
        try:
            request = parse_request(self.scope)
        except BadRequest as exc:
            await self._refuse(400, exc.code, exc.detail)
        if request.scope != self.scope_name:
            await self._refuse(400, "bad_scope", f"this stream serves scope={self.scope_name}")

        try:
            with tracing.span("stream open", user_id=self.user.user_id):
                await self._open(request)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # Redis is unreachable (restarting): the client retries in a moment, instead
            # of seeing a 500. _finish releases what was taken.
            logger.warning("stream of user %s not opened: Redis: %s", self.user.user_id, exc)
            await self._retry_later("unavailable", "Redis is unavailable; retry shortly.")

    async def _authenticate(self) -> StreamUser:
        """Who opens the stream (``AuthFailed``: 401). A stateless JWT check here."""
        return authenticate(self.scope)

    async def _open(self, request: StreamRequest) -> None:
        settings = conf.get()
        self.request = request
        self.store = get_store()
        self.kafka = get_kafka_replayer()
        self.hub = get_hub()
        if self.hub.draining:  # at once: no Redis round trip (Redis may be why we stop)
            await self._retry_later("draining", "This node is shutting down.")
        self.lease = uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(stream_id=self.lease)

        # Join before reading the store: an event stored after the read then arrives live,
        # and one stored before it is in the read. Either way, none falls between.
        self.subscriber = self._subscriber(settings.STREAM_QUEUE_SIZE)
        await self.hub.attach(self.subscriber)
        self.attached = True
        # One round trip: the open's count and lease with everything the plan reads.
        view = await read_open(self.store, self._open_query(request))
        try:
            admit(view)
        except Refused as exc:
            await self._refuse(
                429, exc.code, exc.detail, [(b"retry-after", exc.retry_after.encode())]
            )
        lease_keeper(self.store).hold(self.user.user_id, self.lease)  # renewed while it runs
        try:
            self.plan = await self._plan(request, view)
        except ResumeRefused as exc:
            await self._refuse(exc.status, exc.code, exc.detail)
        except Unfillable as exc:
            logger.warning("stream of user %s not opened: %s", self.user.user_id, exc.reason)
            await self._retry_later("unavailable", "Kafka is unavailable; retry shortly.")

        headers = [*STREAM_HEADERS, (RESUMED_FROM_HEADER, self.plan.resumed_from.encode())]
        await self.send_headers(status=200, headers=headers)
        opening = encode_sse(retry_ms=settings.RETRY_MS, comment="taskstream") + encode_sse(
            event="stream-open", data=json.dumps(self._opening())
        )
        if self.plan.reset is not None:
            # The first event says the request could not be honoured, and from where the
            # stream resumes instead: never a silent jump.
            metrics.STREAM_RESETS.labels(self.plan.reset["reason"]).inc()
            opening += encode_sse(event="stream-reset", data=json.dumps(self.plan.reset))
        await self.send_body(opening.encode(), more_body=True)
        metrics.STREAMS_OPENED.inc()
        reset = self.plan.reset["reason"] if self.plan.reset else None
        log.info("stream opened", resumed_from=self.plan.resumed_from, reset=reset)
        self.writer = asyncio.create_task(self._write_loop(), name="sse-writer")
        self.subscriber.writer = self.writer

    async def _retry_later(self, code: str, detail: str) -> NoReturn:
        """Refuse so that the client comes back: behind a proxy that retries 503 on another
        node (deploy/nginx), a 503 moves the request there at once; facing browsers
        directly, a 200 that ends at once makes EventSource retry (a 503 would make it
        give up for good)."""
        settings = conf.get()
        if settings.DRAIN_REFUSAL_STATUS == 503:
            await self._refuse(503, code, detail)
        metrics.STREAMS_REJECTED.labels(code).inc()
        log.info("stream refused", status=200, code=code)
        await self.send_headers(status=200, headers=STREAM_HEADERS)
        await self.send_body(encode_sse(retry_ms=settings.RETRY_MS).encode())
        raise StopConsumer

    def _subscriber(self, limit: int) -> Subscriber:
        """What this stream takes from the hub: its user's items."""
        return Subscriber(self.user.user_id, limit)

    def _open_query(self, request: StreamRequest) -> OpenQuery:
        """What the open reads from the store: the heads and pages after the cursor too."""
        cursor = None if request.cursor is None else dict(request.cursor.offsets)
        return open_query(self.user.user_id, self.lease, cursor)

    async def _plan(self, request: StreamRequest, view: OpenView) -> ResumePlan:
        """Where the stream starts: after the cursor (the header wins over the query),
        else at a time, else from now on; ``view``: what the open read."""
        user_id = self.user.user_id
        if request.since is not None and request.cursor is None:
            return await plan_since(self.store, self.kafka, user_id, request.since, view)
        return await plan_resume(self.store, self.kafka, user_id, request.cursor, view)

    def _opening(self) -> dict[str, Any]:
        """The data of ``stream-open``."""
        return {"user_id": self.user.user_id}

    async def _finish(self) -> None:
        if self.writer is not None:
            self.writer.cancel()
            # The writer logs its own failures; here it only has to be finished.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.writer
        try:  # bounded: Redis retries would hold the connection (and a stopping node)
            async with asyncio.timeout(CLEANUP_SECONDS):
                await self._leave()
        except TimeoutError:
            logger.warning("a stream's Redis clean-up was abandoned; its lease will expire")

    async def _leave(self) -> None:
        if self.attached:
            try:
                await self.hub.detach(self.subscriber)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                # The hub left its local maps; the layer membership lapses (group_expiry).
                logger.warning("hub: leaving the layer group failed: %s", exc)
        if hasattr(self, "lease"):
            with contextlib.suppress(Exception):
                await lease_keeper(self.store).release(self.user.user_id, self.lease)

    async def _refuse(
        self, status: int, code: str, detail: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> NoReturn:
        """Answer with a JSON error before any stream bytes, and stop."""
        metrics.STREAMS_REJECTED.labels(code).inc()
        log.info("stream refused", status=status, code=code)
        body = json.dumps({"detail": detail, "code": code}).encode()
        headers = [(b"content-type", b"application/json"), *(extra or [])]
        await self.send_response(status, body, headers=headers)
        raise StopConsumer


async def _until_disconnected_or_ended(receive: Any, writer: asyncio.Task[None]) -> None:
    """Until the client is gone or ``writer`` has ended, whichever comes first.

    Watched from the stream's own task, not from a watcher task of its own with
    ``asyncio.wait`` (a task, coroutines, a waiter future, done callbacks and their
    contexts per idle stream, all scanned by every garbage collection: issue #9, M4).
    The writer's end cancels the wait instead.
    """
    task = asyncio.current_task()
    assert task is not None
    on_end = _WriterEnd(task)
    writer.add_done_callback(on_end)
    try:
        # The request's own messages come first, and are ignored.
        while (await receive())["type"] != "http.disconnect":
            pass
    except asyncio.CancelledError:
        # Ours (the writer ended): swallowed. Anyone else's (a server shutting down) goes on.
        if not on_end.ended or task.uncancel() > 0:
            raise
    finally:
        on_end.watching = False
        writer.remove_done_callback(on_end)


class _WriterEnd:
    """The writer's done callback: cancels the stream's wait. One small object per stream
    (a closure was a function, three cells and a tuple)."""

    __slots__ = ("ended", "task", "watching")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.watching = True
        self.ended = False

    def __call__(self, _: asyncio.Task[None]) -> None:
        # A done callback runs in a later turn of the loop: by then the disconnect may have
        # ended the wait, and a cancel would hit the stream's clean-up instead.
        if self.watching:
            self.ended = True
            self.task.cancel()
