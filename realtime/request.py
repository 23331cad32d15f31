"""What a stream request asks for, read from its headers and query string alone.

- ``scope``: ``user`` (the default: the caller's own events) or ``staff`` (every user's,
  or one user's with ``user=<id>``; staff only, live only: ``realtime.staff``);
- where to start: ``Last-Event-ID`` (the header), else ``?last_event_id=``, else
  ``?since=<ISO 8601 time>``. The header wins: EventSource re-sends the page's query on
  every automatic reconnect, so the query's values are stale after the first event.

A value that cannot be used is a ``BadRequest`` naming the parameter, answered with a 400
JSON body before any stream bytes (docs/events.md, "Resuming").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qs

from streaming.cursor import Cursor, CursorError, parse
from streaming.schema import MAX_USER_ID

USER_SCOPE: Final = "user"
STAFF_SCOPE: Final = "staff"
SCOPES: Final = (USER_SCOPE, STAFF_SCOPE)
# The longest ISO 8601 time worth reading: "2026-01-02T03:04:05.123456+05:30" is 32.
MAX_SINCE_LENGTH: Final = 64


class BadRequest(Exception):
    """A parameter the stream cannot use: HTTP 400 with ``code`` and ``detail``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


@dataclass(frozen=True, slots=True)
class StreamRequest:
    scope: str = USER_SCOPE
    cursor: Cursor | None = None  # Last-Event-ID, or ?last_event_id=
    since: datetime | None = None  # ?since=, with its zone, not in the future
    user: int | None = None  # staff scope: only this user's events


def query(scope: dict[str, Any]) -> dict[str, str]:
    """The query string's parameters; a repeated one keeps its last value."""
    raw = bytes(scope.get("query_string", b"")).decode("latin-1")
    return {name: values[-1] for name, values in parse_qs(raw, keep_blank_values=True).items()}


def requested_scope(scope: dict[str, Any]) -> str:
    """The ``scope`` parameter as given (``user`` when absent); not checked here."""
    return query(scope).get("scope", USER_SCOPE)


def parse_request(scope: dict[str, Any], *, now: datetime | None = None) -> StreamRequest:
    params = query(scope)
    stream_scope = params.get("scope", USER_SCOPE)
    if stream_scope not in SCOPES:
        raise BadRequest("bad_scope", f"scope must be one of {', '.join(SCOPES)}")
    try:
        cursor = _cursor(scope, params)
    except CursorError as exc:
        raise BadRequest("bad_cursor", f"Last-Event-ID is not a cursor: {exc}") from None
    since = None
    if params.get("since"):
        since = parse_since(params["since"], now or datetime.now(UTC))
    user = None
    if params.get("user"):
        user = _user(params["user"])
    if stream_scope == STAFF_SCOPE and since is not None:
        raise BadRequest("bad_since", "since: the staff scope is live only (no replay)")
    if stream_scope == USER_SCOPE and user is not None:
        raise BadRequest("bad_user", "user: only the staff scope may name a user")
    return StreamRequest(stream_scope, cursor, since, user)


def _cursor(scope: dict[str, Any], params: dict[str, str]) -> Cursor | None:
    for name, value in scope.get("headers", ()):
        if name == b"last-event-id":
            text = bytes(value).decode("latin-1").strip()
            return parse(text) if text else None
    given = params.get("last_event_id")
    return parse(given) if given else None


def parse_since(text: str, now: datetime) -> datetime:
    """An ISO 8601 time with a zone, not after ``now``."""
    if len(text) > MAX_SINCE_LENGTH:
        raise BadRequest("bad_since", f"since: at most {MAX_SINCE_LENGTH} characters")
    if not text.isprintable() or not text.isascii():
        raise BadRequest("bad_since", "since: only printable ASCII characters")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            "bad_since",
            "since: not an ISO 8601 time, e.g. 2026-01-02T03:04:05Z "
            "(in a query string, write + as %2B)",
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise BadRequest("bad_since", "since: needs a time zone, e.g. 2026-01-02T03:04:05Z")
    if when > now:
        raise BadRequest("bad_since", "since: is later than the server's clock")
    return when


def _user(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 10 or int(text) < 1:
        raise BadRequest("bad_user", "user: a user id, a positive integer")
    user = int(text)
    if user > MAX_USER_ID:
        raise BadRequest("bad_user", "user: a user id, a positive integer")
    return user


def announces_body(scope: dict[str, Any]) -> bool:
    """Whether the request says a body follows (the stream takes none)."""
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False
