"""Server-side Lua scripts. Each makes one decision atomically in Redis, so no
other node can act between the check and the write it guards."""

from __future__ import annotations

# Read an entry; on a miss also read the cluster clock (the version the caller's
# load will carry) and, if asked, try to take the single-flight lease.
# KEYS: entry, clock, lease   ARGV: lease owner ('' = no lease), lease ms
# -> {entry or false, clock, leased 0/1}
READ = """
local e = redis.call('GET', KEYS[1])
if e then return {e} end
local c = redis.call('GET', KEYS[2]) or '0'
local leased = 0
if ARGV[1] ~= '' then
  if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then leased = 1 end
end
return {false, c, leased}
"""

# Store a loaded value only if neither its key nor any of its tags (nor '*')
# was invalidated after the version the load started at: the stale-set race
# is decided here, atomically. Then release the lease and wake the waiters.
# KEYS: entry, key mark, tags hash, lease
# ARGV: payload, version, px, lease owner ('' = none), fill channel, key, tags...
SET_IF_FRESH = """
local ver = tonumber(ARGV[2])
local fresh = true
local mark = redis.call('GET', KEYS[2])
if mark and tonumber(mark) > ver then fresh = false end
if fresh then
  local fields = {'*'}
  for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
  local vals = redis.call('HMGET', KEYS[3], unpack(fields))
  for i = 1, #vals do
    if vals[i] and tonumber(vals[i]) > ver then fresh = false; break end
  end
end
if fresh then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3]) end
if ARGV[4] ~= '' and redis.call('GET', KEYS[4]) == ARGV[4] then
  redis.call('DEL', KEYS[4])
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
if fresh then return 1 end
return 0
"""

# Give a lease back without a value (the factory failed) and wake the waiters.
# KEYS: lease   ARGV: owner, fill channel, key
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"""

# Remove a key everywhere: new version, mark (voids loads that started before),
# delete the L2 entry, publish. Optionally store a new value at that version
# (a `set`, which is "invalidate, then write the new truth").
# KEYS: clock, key mark, entry   ARGV: message without '}', mark px, channel,
#   entry after its version ('' = remove; it starts with ' '), entry px
INVALIDATE_KEY = """
local v = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], v, 'PX', ARGV[2])
if ARGV[4] == '' then
  redis.call('DEL', KEYS[3])
else
  redis.call('SET', KEYS[3], v .. ARGV[4], 'PX', ARGV[5])
end
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ',"ver":' .. v .. '}')
return v
"""

# Invalidate tags: one new version recorded for each tag, one message each.
# KEYS: clock, tags hash, tag times   ARGV: channel, now, (tag, message without '}')...
INVALIDATE_TAGS = """
local v = redis.call('INCR', KEYS[1])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], v)
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[i])
  redis.call('PUBLISH', ARGV[1], ARGV[i + 1] .. ',"ver":' .. v .. '}')
end
return v
"""

# Node heartbeat with the server's clock (node clocks may be skewed); also
# returns the nodes seen within the liveness window.
# KEYS: nodes   ARGV: node ('' = only read), window seconds
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[1], now, ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 10 * tonumber(ARGV[2]))
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '+inf')
"""

# Forget tag invalidations older than the record TTL (no entry can be older).
# KEYS: tags hash, tag times   ARGV: cutoff wall time
PRUNE_TAGS = """
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 1000)
for i = 1, #old do redis.call('HDEL', KEYS[1], old[i]) end
if #old > 0 then redis.call('ZREM', KEYS[2], unpack(old)) end
return #old
"""
