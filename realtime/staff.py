"""``GET /api/v1/events/stream?scope=staff``: every user's task events, for the admin's
live views (docs/events.md, "The staff scope"); ``&user=<id>`` narrows it to one user.

- **Who.** An active staff member with the permission to view tasks (what the admin's
  task list asks of them): 403 ``staff_only`` for anyone else, 401 without a credential.
  The admin page has no JWT, so besides the user scope's credentials (Bearer header, the
  stream cookie) this scope accepts the admin's Django session: the Authorization header
  first, then the session, then the stream cookie. Checked once per open, in one
  database unit of work on a thread: the user scope stays free of database queries.
- **What.** Live only: the stream starts now. It does not replay, so a reconnect's
  ``Last-Event-ID`` is answered with ``stream-reset`` ``live-only`` (the page reloads its
  snapshot, as it does on any open). Each ``id:`` is that event's own position, not a
  cursor to resume from. No hole filling and no de-duplication: a record the layer drops
  is missing until the task's next event (each carries the task's whole progress and
  status), and a redelivered record comes again with the same id.
- **Cost.** Without ``user``, the stream is a hub *watcher* (``realtime.hub``): its process
  joins every shard while it is open. Its buffer is bounded like any stream's; overflow
  ends it (the page reconnects and reloads its snapshot). It counts against the viewer's
  own concurrent-stream limit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user, get_user_model
from django.http import HttpRequest

from realtime.admission import open_query
from realtime.auth import AuthFailed, StreamUser, authenticate, cookie, header
from realtime.inbox import Subscriber
from realtime.replay.resume import ResumePlan
from realtime.request import STAFF_SCOPE, StreamRequest
from realtime.runs import Run
from realtime.store_open import OpenQuery, OpenView
from realtime.stream import EventStreamConsumer
from streaming import metrics
from streaming.cursor import Cursor
from streaming.events import encode_sse

# The permission the admin's task list needs: this scope shows the same tasks, live.
VIEW_PERMISSION = "tasks.view_asynctask"


class StaffStreamConsumer(EventStreamConsumer):
    scope_name = STAFF_SCOPE

    async def _authenticate(self) -> StreamUser:
        try:
            token: StreamUser | None = authenticate(self.scope)
            refused: AuthFailed | None = None
        except AuthFailed as exc:
            token, refused = None, exc
        bearer = header(self.scope, b"authorization") is not None
        session_key = None if bearer else cookie(self.scope, settings.SESSION_COOKIE_NAME)
        found = None
        if session_key is not None or token is not None:  # else no query at all
            found = await database_sync_to_async(_identify)(
                session_key, token.user_id if token else None
            )
        if found is None:
            raise refused or AuthFailed(
                "Authentication credentials were not provided.",
                "not_authenticated",
                invalid_token=False,
            )
        user_id, expires_at, allowed = found
        if not allowed:
            await self._refuse(403, "staff_only", "scope=staff is for staff who may view tasks.")
        if expires_at is None:
            assert token is not None  # found by the token: its expiry bounds the stream
            expires_at = token.expires_at
        return StreamUser(user_id=user_id, expires_at=expires_at)

    async def _open(self, request: StreamRequest) -> None:
        if request.user is not None and not await database_sync_to_async(_user_exists)(
            request.user
        ):
            await self._refuse(404, "unknown_user", f"user: no user {request.user}")
        await super()._open(request)

    def _subscriber(self, limit: int) -> Subscriber:
        # No user: a watcher, offered every user's items (realtime.hub).
        return Subscriber(self.request.user, limit)

    def _open_query(self, request: StreamRequest) -> OpenQuery:
        # The admission only: the plan reads nothing (live only).
        return open_query(self.user.user_id, self.lease, None)

    async def _plan(self, request: StreamRequest, view: OpenView) -> ResumePlan:
        plan = ResumePlan(Cursor(), "head")
        if request.cursor is not None:
            # Said, not ignored: the client may have missed events, and should reload.
            plan.reset = {
                "reason": "live-only",
                "requested": str(request.cursor),
                "resumed_from": "head",
            }
        return plan

    def _opening(self) -> dict[str, Any]:
        return {"user_id": self.user.user_id, "scope": STAFF_SCOPE}

    async def _replay(self) -> None:
        return  # live only

    async def _deliver(self, runs: Iterable[Run]) -> None:
        # Each id is the event's own position: exactly the frames the hub encoded once
        # for every stream (realtime.runs).
        batch = list(runs)
        count = sum(len(run) for run in batch)
        if count:
            await self._send(b"".join(run.data for run in batch))
            metrics.STREAM_FRAMES_SENT.inc(count)
            self.sent += count

    async def _heartbeat(self) -> None:
        # No id-only frames: ids here are positions, not a cursor to advance.
        beat = encode_sse(event="heartbeat", data=json.dumps({"t": int(time.time())}))
        await self._send(beat.encode())
        metrics.STREAM_HEARTBEATS.inc()
        self.heartbeats += 1


def _identify(
    session_key: str | None, token_user: int | None
) -> tuple[int, float | None, bool] | None:
    """(user id, session expiry or None, may open the staff scope) of the session's user,
    else of the token's; None when neither names a user. One unit of work, on a thread."""
    user: Any = None
    expires_at: float | None = None
    if session_key:
        engine = import_module(settings.SESSION_ENGINE)
        request = HttpRequest()
        request.session = engine.SessionStore(session_key)
        # Django's own check: the session's user, its auth hash, and its backend.
        found = get_user(request)
        if found.is_authenticated:
            user, expires_at = found, request.session.get_expiry_date().timestamp()
    if user is None and token_user is not None:
        user = get_user_model().objects.filter(pk=token_user).first()
    if user is None:
        return None
    allowed = bool(user.is_active and user.is_staff and user.has_perm(VIEW_PERMISSION))
    return int(user.pk), expires_at, allowed


def _user_exists(user_id: int) -> bool:
    return bool(get_user_model().objects.filter(pk=user_id).exists())
