"""The hot store's Lua scripts (``realtime.store.RedisHotStore``): each runs atomically
in Redis, in one round trip. ``run`` calls a script by its SHA1, for these and for the
channel layer's (``realtime.layer``)."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from redis.exceptions import NoScriptError


async def run(client: Any, script: str, numkeys: int, *keys_and_args: Any) -> Any:
    """``script``'s reply, called by its SHA1: its text crosses the wire, and Redis hashes
    it, once per Redis instead of on every call. A Redis that lacks it (first use, a
    restart, SCRIPT FLUSH) gets it by EVAL, which caches it. Not redis-py's Script object:
    it spent a Protocol isinstance check per call (3 % of a reconnect storm's samples)."""
    try:
        return await client.evalsha(_sha(script), numkeys, *keys_and_args)
    except NoScriptError:
        return await client.eval(script, numkeys, *keys_and_args)


@functools.cache
def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


# ARGV: maxlen, ttl, then JSON {"e": [[stream key, id, prev, body], ...],
# "i": [[index key, member], ...], "h": [[head key, offset], ...]}. An id at or below a
# stream's last (a retried batch) is skipped, not an error. The heads (offsets as text) are
# raised last, never lowered: only once the events up to them are stored.
APPEND = """
local maxlen, ttl = ARGV[1], ARGV[2]
local batch = cjson.decode(ARGV[3])
local expired = {}
for _, e in ipairs(batch.e) do
  redis.pcall('XADD', e[1], 'MAXLEN', '~', maxlen, e[2], 'p', e[3], 'f', e[4])
  if not expired[e[1]] then redis.call('EXPIRE', e[1], ttl); expired[e[1]] = true end
end
for _, i in ipairs(batch.i) do
  redis.call('SADD', i[1], i[2])
  if not expired[i[1]] then redis.call('EXPIRE', i[1], ttl); expired[i[1]] = true end
end
for _, h in ipairs(batch.h or {}) do
  local current = tonumber(redis.call('GET', h[1]) or '-1')
  if tonumber(h[2]) > current then redis.call('SET', h[1], h[2]) end
end
return #batch.e
"""

# Drop expired leases, then take a slot if one is free (or renew the caller's own): 1 if
# taken. A function, shared by ACQUIRE_LEASE and OPEN.
_LEASE = """
local function acquire(key, lease, limit, ttl, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if not redis.call('ZSCORE', key, lease) and redis.call('ZCARD', key) >= tonumber(limit) then
    return 0
  end
  redis.call('ZADD', key, tonumber(now) + tonumber(ttl), lease)
  redis.call('EXPIRE', key, math.ceil(tonumber(ttl)) + 60)
  return 1
end
"""

ACQUIRE_LEASE = _LEASE + "return acquire(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])"

# ARGV: (lease key, lease) pairs to remove.
RELEASE_LEASES = """
for i = 1, #ARGV, 2 do redis.call('ZREM', ARGV[i], ARGV[i + 1]) end
return 1
"""

# ACQUIRE_LEASE for many: ARGV limit, ttl, now, then (lease key, lease) pairs.
RENEW_LEASES = (
    _LEASE
    + """
for i = 4, #ARGV, 2 do acquire(ARGV[i], ARGV[i + 1], ARGV[1], ARGV[2], ARGV[3]) end
return 1
"""
)

# A stream open's reads (realtime.store_open), gathered in one round trip: the same as the
# store's own commands one after another (RedisHotStore's keys). ARGV: prefix, user, the
# open-hit key, its expiry, the opens limit, lease key, lease ("": count nothing, take
# nothing), streams limit, lease ttl, now, source, page size, "1" if there is a cursor
# (else no heads, no pages), then (source, partition, after) per cursor entry. Past the
# opens limit no lease is taken, and without a lease nothing is read.
# Returns {opens, leased, epoch, last, heads, pages}: last is a flat {member, newest id,
# ...}; heads one per cursor entry (nil: none); pages one {member, after, complete,
# entries} per cursor entry, then per partition of the source the user has events in that
# the cursor does not name (after -1).
#
# Called for many opens at once (the opens of a turn of the loop, realtime.store_open):
# ARGV is, per open, its argument count and then its arguments as above; the reply is
# one reply as above per open, in order. Each open still runs as it would alone, one
# after another (a second open of a user sees the first one's count and lease).
OPEN = (
    _LEASE
    + """
local function open_one(ARGV)
  local p, user = ARGV[1], ARGV[2]
  local opens = 0
  if ARGV[7] ~= '' then
    opens = redis.call('INCR', ARGV[3])
    redis.call('EXPIRE', ARGV[3], ARGV[4])
    if opens > tonumber(ARGV[5]) or acquire(ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]) == 0 then
      return {opens, 0}
    end
  end
  local source, size = ARGV[11], ARGV[12]
  local epoch = redis.call('GET', p .. ':epoch:' .. source)
  local index = p .. ':rp:' .. user
  local last, mine = {}, {}
  for _, member in ipairs(redis.call('SMEMBERS', index)) do
    local stream = p .. ':r:' .. user .. ':' .. member
    local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    if #newest > 0 then
      last[#last + 1] = member
      last[#last + 1] = newest[1][1]
      mine[#mine + 1] = member
    end
  end
  if ARGV[13] ~= '1' then
    return {opens, 1, epoch, last}
  end
  local function page(member, after)
    local stream = p .. ':r:' .. user .. ':' .. member
    local from = '-'
    if tonumber(after) >= 0 then from = '(' .. after .. '-1' end
    local entries = redis.call('XRANGE', stream, from, '+', 'COUNT', size)
    local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
    local complete = 0
    if #first > 0 then
      -- The oldest entry kept names the user's event before it (field p).
      local fields = first[1][2]
      for i = 1, #fields, 2 do
        if fields[i] == 'p' and tonumber(fields[i + 1]) <= tonumber(after) then complete = 1 end
      end
    elseif redis.call('EXISTS', index) == 1 and redis.call('SISMEMBER', index, member) == 0 then
      complete = 1
    end
    return {member, after, complete, entries}
  end
  local heads, pages, named = {}, {}, {}
  for i = 14, #ARGV, 3 do
    local member = ARGV[i] .. ':' .. ARGV[i + 1]
    named[member] = true
    heads[#heads + 1] = redis.call('GET', p .. ':head:' .. member)
    pages[#pages + 1] = page(member, ARGV[i + 2])
  end
  for _, member in ipairs(mine) do
    if not named[member] and string.sub(member, 1, #source + 1) == source .. ':'
       and string.find(member, ':', #source + 2, true) == nil then
      pages[#pages + 1] = page(member, '-1')
    end
  end
  return {opens, 1, epoch, last, heads, pages}
end
local replies, i = {}, 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  replies[#replies + 1] = open_one({unpack(ARGV, i + 1, i + n)})
  i = i + n + 1
end
return replies
"""
)
