--[[
  One instance says it is alive and publishes its local figures (queue depth, in flight, requests
  per second) for status pages; instances whose heartbeat expired are dropped.

  Input:
    KEYS[1] live instances (sorted set): id -> expiry, ms of Redis time
    KEYS[2] snapshots (hash): id -> JSON
    ARGV[1] instance id
    ARGV[2] snapshot (JSON)
    ARGV[3] time to live, ms (integer > 0)

  Output: live instances after this call
]]
--- @include "includes/redis-time"

local now = nowMs()
local ttl = tonumber(ARGV[3])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  redis.call('HDEL', KEYS[2], unpack(gone))
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl * 2)
redis.call('PEXPIRE', KEYS[2], ttl * 2)
return redis.call('ZCARD', KEYS[1])
