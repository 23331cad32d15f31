"""The channel layer: channels-redis's, with ``group_send`` in one round trip instead of four
while the group's members stay the same, and a process channel's receive taking every queued
message in one.

Every ``consume_events`` batch ends in one ``group_send`` (realtime/bus.py). channels-redis
4.3 sends it as four commands, one after the other: drop the group's expired members, read
the members, drop each member channel's expired messages, then a script that adds the
message under the channel's capacity. On the core the ingest shares with Redis, Kafka and
PostgreSQL, each round trip also waits for Redis to be scheduled, and a batch's latency is
the sum of its round trips (docs/benchmarks.md, issue #8). The channel keys and messages
depend on the members, so the client must know them before it sends; it remembers the
members of the group's last send and sends with them in one script, which drops the expired
members, compares the rest with those, and only if they are the same does the send (else it
returns the members, and the client derives the keys and messages again and resends). A member
that joined or left since gets, or stops getting, messages from the next send on, as with
channels-redis. A group not sent to yet is expected empty (one round trip if it is, two if
not). The two-step path (one script for the members, one per host to send) remains for
members on other Redis hosts than the group (one script reaches one host) and for members
that changed at every attempt. The same keys, the same stored data, the same expiry and
capacity rules, so the receiving side (channels-redis's own ``receive``, which the hubs use)
is untouched.

The receiving side of a process-specific channel (the hubs', ``name!suffix``): channels-redis
4.3 takes one message per four round trips (put back the backup queue, BZPOPMIN, back the
message up, a cleaner task that drops the backup), and a hub's loop can make only one round
trip per turn: with the streams' writes in between, a hub that fell behind read its backlog
one message per wake (#9 M1). ``receive_single`` here takes up to ``TAKE_MAX`` queued
messages in one script, backed up the same way, and blocks in BZPOPMIN only when the channel
is empty. ``receive`` itself (its lock, the per-channel buffers it hands messages out of)
is channels-redis's. Everything else is channels-redis's.

It relies on channels-redis internals (``_group_key``, ``_map_channel_keys_to_connection``),
hence the exact pin in requirements.txt; tests/test_layer.py sends with it and receives with
the unchanged code, over capacity and past the expiries.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from channels_redis import core

from realtime import redis_scripts as scripts

logger = logging.getLogger(__name__)

# KEYS[1]: the group; ARGV[1]: members that joined at or before this time have expired.
_READ_MEMBERS = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
"""
_MEMBERS = _READ_MEMBERS + "return members\n"

# The send's loop: KEYS[k0 + 1 .. k0 + n] are channel keys; from ARGV[a0 + 1]: a message per
# key, a capacity per key, then the time now, the message expiry (s) and the time at or before
# which a queued message has expired. Returns how many channels were over capacity.
_ADD = """
local now, expiry, stale = ARGV[a0 + 2 * n + 1], ARGV[a0 + 2 * n + 2], ARGV[a0 + 2 * n + 3]
local over_capacity = 0
for i = 1, n do
  local key = KEYS[k0 + i]
  redis.call('ZREMRANGEBYSCORE', key, 0, stale)
  if redis.call('ZCOUNT', key, '-inf', '+inf') < tonumber(ARGV[a0 + n + i]) then
    redis.call('ZADD', key, now, ARGV[a0 + i])
    redis.call('EXPIRE', key, expiry)
  else
    over_capacity = over_capacity + 1
  end
end
return over_capacity
"""

# KEYS: channel keys only; ARGV as in _ADD.
_SEND = "local n, k0, a0 = #KEYS, 0, 0\n" + _ADD

# _MEMBERS then _SEND in one script, if the group's members are the ones the client derived
# the channel keys and messages from. KEYS[1]: the group, then the channel keys; ARGV[1]: as
# in _MEMBERS; ARGV[2]: how many members the client expects, then their names, then ARGV as in
# _ADD. Returns the over-capacity count (an integer), or, sending nothing, the members now (a
# list) when they differ: compared as sets, since a member's refresh (group_add) reorders it.
_SEND_TO_MEMBERS = (
    _READ_MEMBERS
    + """local m = tonumber(ARGV[2])
if #members ~= m then
  return members
end
local expected = {}
for i = 3, m + 2 do
  expected[ARGV[i]] = true
end
for _, name in ipairs(members) do
  if not expected[name] then
    return members
  end
end
local n, k0, a0 = #KEYS - 1, 1, m + 2
"""
    + _ADD
)

# One-script sends per group_send before the two-step path: the first may find the cached
# members out of date, the second normally succeeds; a group whose members change faster than
# that is read and sent to in two round trips, as before.
SEND_ATTEMPTS = 3
# Groups whose members are remembered (the bus sends to one per shard).
REMEMBERED_GROUPS = 256


# KEYS[1]: the channel, KEYS[2]: its backup queue; ARGV[1]: '1' if what the backup holds
# reached the receiver (it is dropped), else it goes back in front of the channel, as in
# channels-redis's cleanup script; ARGV[2]: how many to take. The messages taken are backed
# up, so a receive cancelled while the reply is in flight loses nothing.
_TAKE = """
if ARGV[1] == '1' then
  redis.call('DEL', KEYS[2])
else
  local backed_up = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  for i = #backed_up, 1, -2 do
    redis.call('ZADD', KEYS[1], backed_up[i], backed_up[i - 1])
  end
  redis.call('DEL', KEYS[2])
end
local taken = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[2]))
for i = 1, #taken, 2 do
  redis.call('ZADD', KEYS[2], taken[i + 1], taken[i])
end
return taken
"""

# Messages taken per round trip (each a consume_events batch); the receive buffers hold
# ``capacity`` per channel, so never more than that.
TAKE_MAX = 100


class RedisChannelLayer(core.RedisChannelLayer):  # type: ignore[misc]  # channels-redis is untyped
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Channel keys whose backup queue holds only messages that reached the receive
        # buffers (the last take's reply arrived): the next take drops it.
        self._landed: set[str] = set()
        # Per group, the member names it had at the last send (what the next send expects).
        self._members: dict[str, list[str]] = {}

    async def receive_single(self, channel: str) -> tuple[Any, dict[str, Any]]:
        """A process channel's next message; any others queued with it go to the receive
        buffers (in order, before this one returns: ``receive`` queues the one returned
        after them). Other channels: channels-redis's."""
        if "!" not in channel:
            upstream: tuple[Any, dict[str, Any]] = await super().receive_single(channel)
            return upstream
        assert self.require_valid_channel_name(channel, receive=True), "Channel name invalid"
        index = self.consistent_hash(channel)
        key = self.prefix + channel
        connection = self.connection(index)
        await self.receive_clean_locks.acquire(key)
        try:
            landed = "1" if key in self._landed else "0"
            self._landed.discard(key)  # until this reply is in: it may be cancelled
            taken = await connection.eval(
                _TAKE, 2, key, self._backup_channel_name(key), landed, min(TAKE_MAX, self.capacity)
            )
            self._landed.add(key)
            contents = taken[::2]
            while not contents:
                # Nothing queued: block. The popped message reaches the buffers without
                # another await, so it needs no backup (channels-redis backs it up after a
                # round trip that could be cancelled).
                popped = await connection.bzpopmin(key, timeout=self.brpop_timeout)
                if popped is not None:
                    contents = [popped[1]]
        finally:
            self.receive_clean_locks.release(key)
        *earlier, last = [self._unpack(content, channel) for content in contents]
        for target, message in earlier:
            for name in target if isinstance(target, list) else [target]:
                self.receive_buffer[name].put_nowait(message)
        return last

    def _unpack(self, content: bytes, channel: str) -> tuple[Any, dict[str, Any]]:
        # channels-redis's receive_single does the same after its deserialize.
        message = self.deserialize(content)
        target = message.pop("__asgi_channel__", channel)
        return target, message

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Send ``message`` to every member of ``group`` (channels-redis's rules), in one round
        trip while the group's members are those of the last send."""
        assert self.require_valid_group_name(group), "Group name not valid"
        key = self._group_key(group)
        index = self.consistent_hash(group)
        connection = self.connection(index)
        now = time.time()
        group_stale = int(now) - self.group_expiry
        # A group not sent to yet is expected empty: one round trip if it is, else the reply
        # holds its members and the next attempt sends.
        names = self._members.get(group, [])
        for _ in range(SEND_ATTEMPTS):
            # Serialized for this send (each carries a random prefix, so each ZADD member
            # is new); only the member names are remembered.
            by_connection, messages, capacities = self._map_channel_keys_to_connection(
                names, message
            )
            if set(by_connection) - {index}:
                # Members on other hosts than the group: one script cannot reach them.
                break
            keys = by_connection.get(index, [])
            args = [group_stale, len(names), *names]
            args += [messages[k] for k in keys] + [capacities[k] for k in keys]
            args += [now, self.expiry, int(now) - int(self.expiry)]
            # By SHA1: the script's text goes once per Redis, not with every send.
            reply = await scripts.run(
                connection, _SEND_TO_MEMBERS, len(keys) + 1, key, *keys, *args
            )
            if isinstance(reply, int):
                self._log_over_capacity(reply, len(names), group)
                return
            names = self._remember(group, reply)
        # The two-step path: read the members, then send to each host's.
        members = await connection.eval(_MEMBERS, 1, key, group_stale)
        names = self._remember(group, members)
        by_connection, messages, capacities = self._map_channel_keys_to_connection(names, message)
        for host, keys in by_connection.items():
            args = [messages[k] for k in keys] + [capacities[k] for k in keys]
            args += [now, self.expiry, int(now) - int(self.expiry)]
            over = await self.connection(host).eval(_SEND, len(keys), *keys, *args)
            self._log_over_capacity(over, len(names), group)

    def _remember(self, group: str, members: list[bytes]) -> list[str]:
        if group not in self._members and len(self._members) >= REMEMBERED_GROUPS:
            del self._members[next(iter(self._members))]  # the oldest remembered
        names = self._members[group] = [name.decode("utf8") for name in members]
        return names

    @staticmethod
    def _log_over_capacity(over: int, members: int, group: str) -> None:
        if over > 0:
            # channels-redis's own line: a channel over capacity drops the message (the
            # streams see the gap and fill it from the hot store).
            logger.info("%s of %s channels over capacity in group %s", over, members, group)
