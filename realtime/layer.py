"""The channel layer: channels-redis's, with ``group_send`` in two round trips instead of four.

Every ``consume_events`` batch ends in one ``group_send`` (realtime/bus.py). channels-redis
4.3 sends it as four commands, one after the other: drop the group's expired members, read
the members, drop each member channel's expired messages, then a script that adds the
message under the channel's capacity. On the core the ingest shares with Redis, Kafka and
PostgreSQL, each round trip also waits for Redis to be scheduled, and a batch's latency is
the sum of its round trips (docs/benchmarks.md, issue #8). Here the first two commands run
as one script and the last two as another: the same keys, the same stored data, the same
expiry and capacity rules, so the receiving side (channels-redis's own ``receive``, which
the hubs use) is untouched. Everything else is channels-redis's.

It relies on channels-redis internals (``_group_key``, ``_map_channel_keys_to_connection``),
hence the exact pin in requirements.txt; tests/test_layer.py sends with it and receives with
the unchanged code, over capacity and past the expiries.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from channels_redis import core

logger = logging.getLogger(__name__)

# KEYS[1]: the group; ARGV[1]: members that joined at or before this time have expired.
_MEMBERS = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# KEYS: channel keys; ARGV: a message per key, a capacity per key, then the time now, the
# message expiry (s) and the time at or before which a queued message has expired.
_SEND = """
local n = #KEYS
local now, expiry, stale = ARGV[2 * n + 1], ARGV[2 * n + 2], ARGV[2 * n + 3]
local over_capacity = 0
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, stale)
  if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + n]) then
    redis.call('ZADD', KEYS[i], now, ARGV[i])
    redis.call('EXPIRE', KEYS[i], expiry)
  else
    over_capacity = over_capacity + 1
  end
end
return over_capacity
"""


class RedisChannelLayer(core.RedisChannelLayer):  # type: ignore[misc]  # channels-redis is untyped
    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Send ``message`` to every member of ``group`` (channels-redis's rules)."""
        assert self.require_valid_group_name(group), "Group name not valid"
        key = self._group_key(group)
        connection = self.connection(self.consistent_hash(group))
        now = time.time()
        members = await connection.eval(_MEMBERS, 1, key, int(now) - self.group_expiry)
        channel_names = [name.decode("utf8") for name in members]
        by_connection, messages, capacities = self._map_channel_keys_to_connection(
            channel_names, message
        )
        for index, keys in by_connection.items():
            args = [messages[k] for k in keys] + [capacities[k] for k in keys]
            args += [now, self.expiry, int(now) - int(self.expiry)]
            over = await self.connection(index).eval(_SEND, len(keys), *keys, *args)
            if over > 0:
                # channels-redis's own line: a channel over capacity drops the message
                # (the streams see the gap and fill it from the hot store).
                logger.info(
                    "%s of %s channels over capacity in group %s", over, len(channel_names), group
                )
