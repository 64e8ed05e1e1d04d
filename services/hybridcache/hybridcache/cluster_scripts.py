"""The Lua scripts of Redis Cluster mode (docs/design.md, "Redis Cluster").

A script may only touch keys (and publish on shard channels) of one hash
slot. The invalidation state (``Keys`` cluster layout: ``{<prefix>}state``,
``marks``, ``nodes``, the time sets and every backplane channel) is in one
slot, the state slot; each cache key's entry, lease and mark are in a slot of
their own (the ``{k:<key>}`` hash tag). The standalone scripts that touch
both (READ, SET_IF_FRESH, RELEASE with its fill notice, the key
invalidations) are split here into a state-slot half and an entry-slot half,
run one after the other by ``RedisLayer``; the scripts that touch only the
state are the standalone ones with ``SPUBLISH`` (sharded pub/sub) for
``PUBLISH``.

Why the split keeps the stale-set race closed (the argument in full is in
docs/design.md):
- a load stores only if the state slot says no record of its key, its tags
  or '*' is newer than its version (``CHECK_FRESH``) AND its entry slot's
  mark (written by every removal or set of the key, ``ENTRY_INVALIDATE``)
  is not newer (``STORE_ENTRY``);
- a key invalidation writes its mark (and deletes or replaces the entry) in
  the entry slot *before* its message is published, so a load that passed
  ``CHECK_FRESH`` before the invalidation either stored before the mark was
  written (then the entry is deleted or replaced by it) or after (then the
  mark refuses it); and no replica hears of the invalidation while the old
  entry is still in Redis;
- a tag invalidation never deletes entries: an entry stored after one with
  an older version is refused by every replica that heard it, exactly as an
  entry stored just before it is in standalone mode.
"""

from __future__ import annotations

from . import scripts

# The standalone scripts that touch only the state slot; their messages go
# out on the state slot's shard channels.
SNAPSHOT = scripts.SNAPSHOT
INVALIDATE_TAGS = scripts.INVALIDATE_TAGS.replace("'PUBLISH'", "'SPUBLISH'")
HEARTBEAT = scripts.HEARTBEAT.replace("'PUBLISH'", "'SPUBLISH'")
PRUNE = scripts.PRUNE
LEAVE = scripts.LEAVE

# The clock and epoch a load starts at (the state half of READ).
# KEYS: state, marks, nodes   ARGV: floor   -> {clock, epoch}
READ_STATE = scripts._ENSURE_STATE + """
local epoch = ensure_state()
return {redis.call('HGET', KEYS[1], 'clock'), epoch}
"""

# The entry and, if there is none and the caller asks, the lease (the entry
# half of READ).
# KEYS: entry, lease   ARGV: lease owner ('' = none), lease ms, skip entry ('1')
# -> {entry or false, leased 0/1}
READ_ENTRY = """
local e = false
if ARGV[3] ~= '1' then e = redis.call('GET', KEYS[1]) end
local leased = 0
if not e and ARGV[1] ~= '' then
  if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then leased = 1 end
end
return {e, leased}
"""

# Whether a load at ARGV[1] may still be stored as far as the state slot
# knows: the epoch is the one it started in and neither its key nor any of
# its tags (nor '*') was invalidated after its version.
# KEYS: state, marks   ARGV: version, key, epoch, tags...   -> 1 fresh / 0
CHECK_FRESH = """
local ver = tonumber(ARGV[1])
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[3]
   or redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[3] then return 0 end
local mark = redis.call('HGET', KEYS[2], 'k:' .. ARGV[2])
if mark and (tonumber(mark) or math.huge) > ver then return 0 end
local fields = {'t:*'}
for i = 4, #ARGV do fields[#fields + 1] = 't:' .. ARGV[i] end
local vals = redis.call('HMGET', KEYS[1], unpack(fields))
for i = 1, #vals do
  if vals[i] and (tonumber(vals[i]) or math.huge) > ver then return 0 end
end
return 1
"""

# Store a load that CHECK_FRESH passed, unless the key's mark in this slot is
# newer than its version (a removal or set landed since); then give the
# lease back. The fill notice is published by the caller (its channel is in
# the state slot).
# KEYS: entry, lease, mark   ARGV: payload, version, px, lease owner ('' = none),
#   fresh ('1' = store, '0' = only give the lease back)
# -> {stored 0/1, lease released 0/1}
STORE_ENTRY = """
local stored = 0
if ARGV[5] == '1' then
  local mark = redis.call('GET', KEYS[3])
  if not (mark and (tonumber(mark) or math.huge) > tonumber(ARGV[2])) then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
    stored = 1
  end
end
local released = 0
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) == ARGV[4] then
  redis.call('DEL', KEYS[2])
  released = 1
end
return {stored, released}
"""

# Give a lease back without a value (the caller publishes the fill notice).
# KEYS: lease   ARGV: owner   -> 1 released / 0
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# The entry half of a key removal or set at version ARGV[1]: the mark (which
# refuses older loads from now on), then delete the entry or store the new
# one at that version. An older invalidation arriving after a newer one
# changes nothing (the newer one's value stays).
# KEYS: entry, mark   ARGV: version, entry after its version ('' = remove),
#   entry px, mark px   -> 1 applied / 0 superseded
ENTRY_INVALIDATE = """
local ver = tonumber(ARGV[1])
local mark = tonumber(redis.call('GET', KEYS[2]) or '')
if mark and mark > ver then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2], 'PX', ARGV[3])
end
return 1
"""

# The state half of INVALIDATE_KEY: a new version and the mark in the state
# slot; the message is returned, not published: the caller publishes it once
# the entry half is done.
# KEYS: state, marks, nodes, mark times   ARGV: floor, message without '}', key
# -> {version, epoch, message}
INVALIDATE_KEY_STATE = scripts._ENSURE_STATE + """
local epoch = ensure_state()
local v = redis.call('HINCRBY', KEYS[1], 'clock', 1)
local vs = string.format('%d', v)
local rt, secs = redis_time()
redis.call('HSET', KEYS[2], 'k:' .. ARGV[3], vs)
redis.call('ZADD', KEYS[4], secs, ARGV[3])
return {v, epoch, ARGV[2] .. ',"ver":' .. vs .. ',"rt":' .. rt .. '}'}
"""

# The state half of INVALIDATE_BATCH (same arguments; a key group's entry and
# px are for the entry half and ignored here); the message is returned.
# KEYS: state, marks, nodes, mark times, tag times
# -> {{version of each group}, epoch, message}
INVALIDATE_BATCH_STATE = scripts._ENSURE_STATE + """
local epoch = ensure_state()
local rt, secs = redis_time()
local items, versions = {}, {}
local i = 4
while i <= #ARGV do
  local vs = string.format('%d', redis.call('HINCRBY', KEYS[1], 'clock', 1))
  versions[#versions + 1] = tonumber(vs)
  if ARGV[i] == 'k' then
    local key = ARGV[i + 1]
    redis.call('HSET', KEYS[2], 'k:' .. key, vs)
    redis.call('ZADD', KEYS[4], secs, key)
    items[#items + 1] = '["k",' .. ARGV[i + 2] .. ',' .. vs .. ']'
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
return {versions, epoch, ARGV[3] .. ',"b":[' .. table.concat(items, ',') ..
        '],"rt":' .. rt .. '}'}
"""
