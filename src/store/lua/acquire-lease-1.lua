--[[
  Take one of `limit` concurrency slots of a bucket as a lease that expires by itself, so an
  instance that dies cannot leak it. Expired leases are dropped first.

  Input:
    KEYS[1] leases (sorted set): lease id -> expiry, ms of Redis time
    ARGV[1] limit: slots (integer >= 1)
    ARGV[2] lease id
    ARGV[3] time to live, ms (integer > 0)

  Output: { 1, 0 } when taken; { 0, ms until the earliest lease expires } when all slots are held
]]
--- @include "includes/redis-time"

local now = nowMs()
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  return { 1, 0 }
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return { 0, math.max(1, tonumber(first[2]) - now) }
