--[[
  Give a concurrency lease back and tell the team a slot is free (one PUBLISH), so instances waiting
  for a slot try again at once instead of polling.

  Input:
    KEYS[1] leases (sorted set)
    ARGV[1] lease id
    ARGV[2] channel to publish the freed bucket on
    ARGV[3] bucket name (the message)

  Output: 1 if the lease was held, 0 if it had expired already
]]
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return removed
