"""Server-side Lua scripts. Each makes one decision atomically in Redis, so no
other node can act between the check and the write it guards."""

from __future__ import annotations

# The cluster clock starts at Redis's own time in microseconds whenever Redis
# has no clock (first use, or a restart that lost everything), so versions keep
# growing across a restart as long as fewer than a million invalidations per
# second were made. The start value doubles as the epoch. KEYS[2] is always
# the clock, KEYS[#KEYS] the epoch.
_ENSURE_CLOCK = """
local function ensure_clock()
  local e = redis.call('GET', KEYS[#KEYS])
  if e then return e end
  local t = redis.call('TIME')
  e = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('SET', KEYS[#KEYS], e)
  local c = redis.call('GET', KEYS[2])
  if not c or tonumber(c) < tonumber(e) then redis.call('SET', KEYS[2], e) end
  return e
end
"""

# Read an entry; on a miss also read the cluster clock (the version the caller's
# load will carry) and, if asked, try to take the single-flight lease.
# KEYS: entry, clock, lease, epoch   ARGV: lease owner ('' = no lease), lease ms
# -> {entry or false, clock, leased 0/1, epoch}
READ = _ENSURE_CLOCK + """
local e = redis.call('GET', KEYS[1])
if e then return {e} end
local epoch = ensure_clock()
local c = redis.call('GET', KEYS[2])
local leased = 0
if ARGV[1] ~= '' then
  if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then leased = 1 end
end
return {false, c, leased, epoch}
"""

# Store a loaded value only if neither its key nor any of its tags (nor '*')
# was invalidated after the version the load started at: the stale-set race
# is decided here, atomically. Then release the lease and wake the waiters.
# KEYS: entry, key mark, tags hash, lease, epoch
# ARGV: payload, version, px, lease owner ('' = none), fill channel, key, epoch, tags...
SET_IF_FRESH = """
local ver = tonumber(ARGV[2])
local fresh = redis.call('GET', KEYS[5]) == ARGV[7]
local mark = redis.call('GET', KEYS[2])
if fresh and mark and tonumber(mark) > ver then fresh = false end
if fresh then
  local fields = {'*'}
  for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
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
# KEYS: key mark, clock, entry, epoch   ARGV: message without '}', mark px,
#   channel, entry after its version ('' = remove; it starts with ' '), entry px
INVALIDATE_KEY = _ENSURE_CLOCK + """
ensure_clock()
local v = redis.call('INCR', KEYS[2])
local vs = string.format('%d', v)
redis.call('SET', KEYS[1], vs, 'PX', ARGV[2])
if ARGV[4] == '' then
  redis.call('DEL', KEYS[3])
else
  redis.call('SET', KEYS[3], vs .. ARGV[4], 'PX', ARGV[5])
end
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ',"ver":' .. vs .. '}')
return v
"""

# Invalidate tags: one new version recorded for each tag, one message each.
# KEYS: tags hash, clock, tag times, epoch
# ARGV: channel, now, (tag, message without '}')...
INVALIDATE_TAGS = _ENSURE_CLOCK + """
ensure_clock()
local v = redis.call('INCR', KEYS[2])
local vs = string.format('%d', v)
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], vs)
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[i])
  redis.call('PUBLISH', ARGV[1], ARGV[i + 1] .. ',"ver":' .. vs .. '}')
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
