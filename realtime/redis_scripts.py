"""The hot store's Lua scripts (``realtime.store.RedisHotStore``): each runs atomically
in Redis, in one round trip."""

from __future__ import annotations

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

# Drop expired leases, then take a slot if one is free (or renew the caller's own).
ACQUIRE_LEASE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and
   redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[4]) + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 60)
return 1
"""
