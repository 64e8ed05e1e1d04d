"""Server-side Lua scripts. Each makes one decision atomically in Redis, so no
other node can act between the check and the write it guards.

The invalidation state is two hashes, ``{prefix}state`` (``epoch``, ``clock``
and ``t:<tag>`` -> version) and ``{prefix}marks`` (``epoch`` and
``k:<key>`` -> version), stamped with the same epoch. Neither carries a TTL,
so ``volatile-*`` eviction never picks them. If either is lost, or one is
lost and not the other (DEL, FLUSHALL, a restart or failover without them,
``allkeys-*`` eviction), the next script that needs them starts a new epoch:
both are wiped and restarted together, at a clock above every version ever
handed out. Replicas notice the new epoch (every script returns it), flush
L1 and refuse L2 entries older than it, so no lost record can make an
invalidated value valid again.

The membership sorted set ``{prefix}nodes`` belongs to the same state (an
acknowledged write that cannot see the members cannot wait for them): it
holds the marker ``~epoch:<epoch>`` at score 0, outside every heartbeat
window, and losing it also starts a new epoch.

Every script that may start an epoch takes KEYS[1] = state, KEYS[2] = marks,
KEYS[3] = nodes and ARGV[1] = the highest version the calling replica has
received from Redis (a floor: a clock below it is a state that lost writes,
and the new clock starts above it even if Redis's own TIME is behind, e.g.
after a failover to a server with a slower clock).
"""

from __future__ import annotations

# The state is whole when both hashes carry the same epoch and the clock is a
# number at or above it (and below 2^53, where versions stop being exact),
# and not behind the caller's floor: a clock below a version some replica
# already received from this Redis means the state went back in time (a
# failover to a replica that had not received the last writes, a restart
# from an old snapshot), and records it had are lost.
# Otherwise a new epoch starts at Redis's time in microseconds (so versions
# keep growing across a restart as long as fewer than a million invalidations
# per second were made), above any clock value that survived and above the
# caller's floor.
_ENSURE_STATE = """
local function ensure_state()
  local e = redis.call('HGET', KEYS[1], 'epoch')
  local c = tonumber(redis.call('HGET', KEYS[1], 'clock') or '')
  if e and c and c >= (tonumber(e) or math.huge) and c < 2^53
     and c >= (tonumber(ARGV[1]) or 0)
     and redis.call('HGET', KEYS[2], 'epoch') == e
     and redis.call('ZSCORE', KEYS[3], '~epoch:' .. e) then
    return e
  end
  local t = redis.call('TIME')
  local seed = tonumber(t[1]) * 1000000 + tonumber(t[2])
  -- Anything left of an older state means it was lost, not never made.
  local remnant = e or c or redis.call('EXISTS', KEYS[2]) == 1
    or redis.call('ZCARD', KEYS[3]) > 0
  if not c or c >= 2^53 then c = 0 end
  local f = tonumber(ARGV[1]) or 0
  if c >= seed then seed = c + 1 end
  if f >= seed then seed = f + 1 end
  e = string.format('%d', seed)
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', e, 'clock', e)
  if remnant then redis.call('HSET', KEYS[1], 'replaced', '1') end
  redis.call('HSET', KEYS[2], 'epoch', e)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], 0, 0)
  redis.call('ZADD', KEYS[3], 0, '~epoch:' .. e)
  return e
end
local function redis_time()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2])), tonumber(t[1])
end
"""

# The invalidation state as a whole (creating a new epoch if it was lost):
# what a replica reloads after a gap.
# KEYS: state, marks, nodes   ARGV: floor  -> {epoch, flat HGETALL of state}
SNAPSHOT = _ENSURE_STATE + """
local epoch = ensure_state()
return {epoch, redis.call('HGETALL', KEYS[1])}
"""

# Read an entry and the cluster clock (the version a load will carry, and the
# ceiling no honest entry exceeds); if there is no entry and the caller asks,
# try to take the single-flight lease.
# KEYS: state, marks, nodes, entry, lease   ARGV: floor, lease owner ('' = none), lease ms
# -> {entry or false, clock, leased 0/1, epoch}
READ = _ENSURE_STATE + """
local epoch = ensure_state()
local c = redis.call('HGET', KEYS[1], 'clock')
local e = redis.call('GET', KEYS[4])
local leased = 0
if not e and ARGV[2] ~= '' then
  if redis.call('SET', KEYS[5], ARGV[2], 'NX', 'PX', ARGV[3]) then leased = 1 end
end
return {e or false, c, leased, epoch}
"""

# Store a loaded value only if the epoch is the one the load started in and
# neither its key nor any of its tags (nor '*') was invalidated after the
# version the load started at: the stale-set race is decided here,
# atomically. A record that is not a number counts as newer. Then release
# the lease and wake the waiters.
# KEYS: state, marks, entry, lease
# ARGV: payload, version, px, lease owner ('' = none), fill channel, key, epoch, tags...
SET_IF_FRESH = """
local ver = tonumber(ARGV[2])
local fresh = redis.call('HGET', KEYS[1], 'epoch') == ARGV[7]
  and redis.call('HGET', KEYS[2], 'epoch') == ARGV[7]
if fresh then
  local mark = redis.call('HGET', KEYS[2], 'k:' .. ARGV[6])
  if mark and (tonumber(mark) or math.huge) > ver then fresh = false end
end
if fresh then
  local fields = {'t:*'}
  for i = 8, #ARGV do fields[#fields + 1] = 't:' .. ARGV[i] end
  local vals = redis.call('HMGET', KEYS[1], unpack(fields))
  for i = 1, #vals do
    if vals[i] and (tonumber(vals[i]) or math.huge) > ver then fresh = false; break end
  end
end
if fresh then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3]) end
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
# delete the L2 entry, publish (stamped with Redis's time, for lag). Optionally
# store a new value at that version (a `set`: "invalidate, then write the new
# truth").
# KEYS: state, marks, nodes, mark times, entry
# ARGV: floor, message without '}', channel, entry after its version ('' =
#   remove; it starts with ' '), entry px, key   -> {version, epoch}
INVALIDATE_KEY = _ENSURE_STATE + """
local epoch = ensure_state()
local v = redis.call('HINCRBY', KEYS[1], 'clock', 1)
local vs = string.format('%d', v)
local rt, secs = redis_time()
redis.call('HSET', KEYS[2], 'k:' .. ARGV[6], vs)
redis.call('ZADD', KEYS[4], secs, ARGV[6])
if ARGV[4] == '' then
  redis.call('DEL', KEYS[5])
else
  redis.call('SET', KEYS[5], vs .. ARGV[4], 'PX', ARGV[5])
end
redis.call('PUBLISH', ARGV[3], ARGV[2] .. ',"ver":' .. vs .. ',"rt":' .. rt .. '}')
return {v, epoch}
"""

# Invalidate tags: one new version recorded for each tag, one message each.
# KEYS: state, marks, nodes, tag times
# ARGV: floor, channel, (tag, message without '}')...   -> {version, epoch}
INVALIDATE_TAGS = _ENSURE_STATE + """
local epoch = ensure_state()
local v = redis.call('HINCRBY', KEYS[1], 'clock', 1)
local vs = string.format('%d', v)
local rt, secs = redis_time()
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 't:' .. ARGV[i], vs)
  redis.call('ZADD', KEYS[4], secs, ARGV[i])
  redis.call('PUBLISH', ARGV[2], ARGV[i + 1] .. ',"ver":' .. vs .. ',"rt":' .. rt .. '}')
end
return {v, epoch}
"""

# Several invalidations a node coalesced while its previous call was in
# flight (wire revision 2): each group (a key removal or set, or a set of tags
# invalidated together) takes its own version, in order, exactly as the
# single-group scripts above would have, and one message carries them all:
# the envelope plus ',"b":[["k"|"t", id, version], ...],"rt":<time>}'.
# KEYS: state, marks, nodes, mark times, tag times, entry of each key group...
# ARGV: floor, channel, envelope without '}', then groups:
#   'k', key, key as JSON, entry after its version ('' = remove), entry px
#   't', tag count n, (tag, tag as JSON) x n
# -> {{version of each group}, epoch}
INVALIDATE_BATCH = _ENSURE_STATE + """
local epoch = ensure_state()
local rt, secs = redis_time()
local items, versions = {}, {}
local i, k = 4, 6
while i <= #ARGV do
  local vs = string.format('%d', redis.call('HINCRBY', KEYS[1], 'clock', 1))
  versions[#versions + 1] = tonumber(vs)
  if ARGV[i] == 'k' then
    local key = ARGV[i + 1]
    redis.call('HSET', KEYS[2], 'k:' .. key, vs)
    redis.call('ZADD', KEYS[4], secs, key)
    if ARGV[i + 3] == '' then
      redis.call('DEL', KEYS[k])
    else
      redis.call('SET', KEYS[k], vs .. ARGV[i + 3], 'PX', ARGV[i + 4])
    end
    items[#items + 1] = '["k",' .. ARGV[i + 2] .. ',' .. vs .. ']'
    k = k + 1
    i = i + 5
  else
    local n = tonumber(ARGV[i + 1])
    for j = 0, n - 1 do
      local tag = ARGV[i + 2 + 2 * j]
      redis.call('HSET', KEYS[1], 't:' .. tag, vs)
      redis.call('ZADD', KEYS[5], secs, tag)
      items[#items + 1] = '["t",' .. ARGV[i + 3 + 2 * j] .. ',' .. vs .. ']'
    end
    i = i + 2 + 2 * n
  end
end
redis.call('PUBLISH', ARGV[2], ARGV[3] .. ',"b":[' .. table.concat(items, ',') ..
           '],"rt":' .. rt .. '}')
return {versions, epoch}
"""

# Node heartbeat with the server's clock (node clocks may be skewed). It also
# makes sure the invalidation state exists (so a lost state is noticed by
# every replica within a heartbeat) and publishes the server time on the
# node's own heartbeat channel: hearing it back proves the node's
# subscription delivered everything published before it (the backplane
# lease). Returns the epoch, the server time and the nodes seen within the
# membership window with their last heartbeat.
# The membership only when it changed: returning it on every heartbeat made
# heartbeats cost O(N^2) across a fleet (N nodes, each reading N members a
# beat). The state hash counts changes to the member set in 'members' (a
# node entering the window, the oldest member leaving it, a clean leave; a
# new epoch starts the count afresh), and 'oldest' holds the oldest member's
# last heartbeat, so one leaving the window is noticed in O(log N); 'count'
# (the size of the nodes set) catches joins and leaves by older releases. A caller
# passing the '<epoch>:<count>' it last saw gets false instead of the
# members while that is still current; '' always gets them.
# KEYS: state, marks, nodes   ARGV: floor, node ('' = only read), window seconds,
#   heartbeat channel ('' = none), token echoed, membership seen ('' = none)
#   -> {epoch, time, {node, score, ...} or false, epoch replaced a lost one (0/1),
#       membership '<epoch>:<count>'}
HEARTBEAT = _ENSURE_STATE + """
local epoch = ensure_state()
local rt, secs = redis_time()
local now = tonumber(rt)
local since = now - tonumber(ARGV[3])
local changes = tonumber(redis.call('HGET', KEYS[1], 'members') or '0')
local oldest = tonumber(redis.call('HGET', KEYS[1], 'oldest') or '')
local changed = oldest ~= nil and oldest < since
if ARGV[2] ~= '' then
  local last = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[2]) or '')
  if last == nil or last < since then changed = true end
  redis.call('ZADD', KEYS[3], rt, ARGV[2])
end
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '(0', now - 10 * tonumber(ARGV[3]))
-- Also a different number of nodes in the set (ZCARD, O(1), in the ACL the
-- replicas have): a join or leave by anything that does not count (a
-- replica of an older release).
local count = redis.call('ZCARD', KEYS[3])
if tonumber(redis.call('HGET', KEYS[1], 'count') or '') ~= count then
  redis.call('HSET', KEYS[1], 'count', count)
  changed = true
end
if changed then
  changes = redis.call('HINCRBY', KEYS[1], 'members', 1)
end
if changed or ARGV[2] ~= '' then
  local first = redis.call('ZRANGEBYSCORE', KEYS[3], since, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if first[2] then
    redis.call('HSET', KEYS[1], 'oldest', first[2])
  else
    redis.call('HDEL', KEYS[1], 'oldest')
  end
end
local seen = epoch .. ':' .. changes
local replaced = redis.call('HGET', KEYS[1], 'replaced') and 1 or 0
local members = false
if ARGV[6] ~= seen then
  members = redis.call('ZRANGEBYSCORE', KEYS[3], since, '+inf', 'WITHSCORES')
end
return {epoch, rt, members, replaced, seen}
"""

# A clean leave: the node is no longer a member at once, and the change is
# counted (see HEARTBEAT) so the others' heartbeats return the new members.
# KEYS: state, nodes   ARGV: node   -> 1 if it was a member
LEAVE = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'members', 1) end
return 1
"""

# Forget invalidation records older than the record TTL (by Redis's clock):
# no entry can be older, since entry lifetimes are clamped to that TTL.
# KEYS: state, marks, tag times, mark times   ARGV: ttl seconds
PRUNE = """
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) - tonumber(ARGV[1])
local n = 0
for pair = 0, 1 do
  local hash, times, prefix = KEYS[1 + pair], KEYS[3 + pair], pair == 0 and 't:' or 'k:'
  local old = redis.call('ZRANGEBYSCORE', times, '-inf', cutoff, 'LIMIT', 0, 1000)
  for i = 1, #old do redis.call('HDEL', hash, prefix .. old[i]) end
  if #old > 0 then redis.call('ZREM', times, unpack(old)) end
  n = n + #old
end
return n
"""
