"""Whether a user may open one more stream: stream opens per minute, and concurrent streams
across all nodes (leases in the hot store, renewed while the stream runs: realtime.leases).
Both scopes count against the user who opens the stream: a staff member's staff streams
count against their own limits, never the watched user's.

The open's count and lease are taken with the rest of its reads, in one round trip to the
store (``realtime.store_open``); ``admit`` decides from what that found.
"""

from __future__ import annotations

import time

from realtime.store_open import OPENS_WINDOW, OpenQuery, OpenView
from streaming import conf
from streaming.cursor import PartitionKey


class Refused(Exception):
    """HTTP 429 with ``code``, ``detail`` and a ``Retry-After`` header."""

    def __init__(self, code: str, detail: str, retry_after: str) -> None:
        super().__init__(detail)
        self.code, self.detail, self.retry_after = code, detail, retry_after


def open_query(
    user_id: int, lease: str | None, cursor: dict[PartitionKey, int] | None
) -> OpenQuery:
    """What an open of ``user_id``'s stream reads (``lease``: counted and taken as that)."""
    settings = conf.get()
    return OpenQuery(
        user_id=user_id,
        lease=lease,
        opens_limit=settings.STREAM_OPENS_PER_MINUTE,
        streams_limit=settings.MAX_STREAMS_PER_USER,
        lease_ttl=lease_ttl(),
        source=settings.TOPIC_EVENTS,
        cursor=cursor,
        page_size=settings.REPLAY_PAGE,
    )


def admit(view: OpenView) -> None:
    """Nothing, if the open was counted and took one of the user's stream slots; else
    ``Refused``."""
    settings = conf.get()
    if view.opens > settings.STREAM_OPENS_PER_MINUTE:
        retry = str(OPENS_WINDOW - int(time.time()) % OPENS_WINDOW)
        raise Refused("throttled", "Too many stream opens; retry later.", retry)
    if not view.leased:
        limit = settings.MAX_STREAMS_PER_USER
        raise Refused("too_many_streams", f"At most {limit} concurrent streams per user.", "5")


def lease_ttl() -> float:
    settings = conf.get()
    return 3 * settings.HEARTBEAT_SECONDS + settings.SEND_TIMEOUT_SECONDS
