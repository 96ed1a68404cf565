--[[
  The snapshots of every instance whose heartbeat has not expired.

  Input:
    KEYS[1] live instances (sorted set): id -> expiry, ms of Redis time
    KEYS[2] snapshots (hash): id -> JSON

  Output: { id1, snapshot1, id2, snapshot2, … } (a snapshot is false when it was lost)
]]
--- @include "includes/redis-time"

local now = nowMs()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
if #ids == 0 then return {} end
local snaps = redis.call('HMGET', KEYS[2], unpack(ids))
local out = {}
for i = 1, #ids do
  out[#out + 1] = ids[i]
  out[#out + 1] = snaps[i]
end
return out
