"""Whether a user may open one more stream: stream opens per minute, and concurrent streams
across all nodes (leases in the hot store, renewed by the stream while it runs). Both
scopes count against the user who opens the stream: a staff member's staff streams count
against their own limits, never the watched user's."""

from __future__ import annotations

import time

from realtime.store import HotStore
from streaming import conf


class Refused(Exception):
    """HTTP 429 with ``code``, ``detail`` and a ``Retry-After`` header."""

    def __init__(self, code: str, detail: str, retry_after: str) -> None:
        super().__init__(detail)
        self.code, self.detail, self.retry_after = code, detail, retry_after


async def admit(store: HotStore, user_id: int, lease: str) -> None:
    """Count the open and take one of the user's stream slots as ``lease``, or ``Refused``."""
    settings = conf.get()
    opens = await store.count_hit(f"open:{user_id}", 60)
    if opens > settings.STREAM_OPENS_PER_MINUTE:
        retry = str(60 - int(time.time()) % 60)
        raise Refused("throttled", "Too many stream opens; retry later.", retry)
    if not await renew(store, user_id, lease):
        limit = settings.MAX_STREAMS_PER_USER
        raise Refused("too_many_streams", f"At most {limit} concurrent streams per user.", "5")


async def renew(store: HotStore, user_id: int, lease: str) -> bool:
    """Take or keep the slot ``lease`` for a few heartbeats more (False: none is free)."""
    settings = conf.get()
    ttl = 3 * settings.HEARTBEAT_SECONDS + settings.SEND_TIMEOUT_SECONDS
    return await store.acquire_lease(user_id, lease, settings.MAX_STREAMS_PER_USER, ttl)
