"""How every Redis client of the project retries and times out: the hot store's and the
channel layer's.

A Redis restart leaves each pooled connection dead; without a retry, the next command on
each fails once (an "Exception in ASGI application" on a stream open). With it, the
command runs again on a fresh connection, after a short backoff. A connection that dies
silently (a partition, a frozen server: no reset ever arrives) is bounded by the socket
timeouts instead of hanging its caller: 10 s, above channels-redis's 5 s blocking pop.
"""

from __future__ import annotations

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError, TimeoutError

# A command written on a pooled connection whose server already closed it (a restart)
# fails in uvloop's transport with RuntimeError ("the handler is closed"), not as a
# ConnectionError, and redis-py's default policy does not retry it: without this, a
# restart surfaced as a 500 on the first stream open that drew such a connection.
RETRIED = (ConnectionError, TimeoutError, RuntimeError)


def redis_retry() -> Retry:
    """Four more tries, 0.1 to 0.8 s apart (1.5 s in all: a quick restart), on a
    connection error, a timeout, or a write on a connection the server closed."""
    return Retry(ExponentialBackoff(cap=0.8, base=0.1), 4, supported_errors=RETRIED)  # type: ignore[arg-type]


# Seconds; the channel layer's receive blocks in BZPOPMIN for 5 s, so reads need longer.
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0

# What a new connection tells Redis about its client (CLIENT SETINFO), made once: left to
# redis-py, every new connection looked its own version up in the installed packages'
# metadata, a noticeable part of a reconnect storm as the pool grew (py-spy, issue #9).
DRIVER_INFO = DriverInfo()
