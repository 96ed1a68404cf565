--[[
  Fair share across instances: in how many instances each client of a bucket is active. Each
  instance says, about twice a second while it holds requests of the bucket, which clients it holds
  them for; a client active in n instances then books 1/n of its look-ahead in each, so sending
  through several instances does not buy it several shares. Off the admission path.

  Input:
    KEYS[1] presence (hash): "<client> <instance>" -> expiry, ms of Redis time
    ARGV[1] instance id (no spaces)
    ARGV[2] time to live, ms (integer > 0)
    ARGV[3..] ids of the clients active in this instance (no spaces)

  Output: for each client of ARGV[3..], in order, the number of instances it is active in (>= 1)
]]
--- @include "includes/redis-time"

local now = nowMs()
local ttl = tonumber(ARGV[2])
for i = 3, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i] .. ' ' .. ARGV[1], now + ttl)
end
local counts = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    local client = string.match(all[i], '^(%S+) ')
    counts[client] = (counts[client] or 0) + 1
  end
end
redis.call('PEXPIRE', KEYS[1], ttl * 2)
local out = {}
for i = 3, #ARGV do
  out[#out + 1] = counts[ARGV[i]] or 1
end
return out
