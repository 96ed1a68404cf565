--[[
  Extend the leases this instance still holds (requests waiting or in flight longer than one TTL).
  Only existing members are touched (XX): a lease that already expired stays gone.

  Input:
    KEYS[1] leases (sorted set)
    ARGV[1] time to live, ms
    ARGV[2..] lease ids

  Output: how many leases were extended
]]
--- @include "includes/redis-time"

local now = nowMs()
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return n
