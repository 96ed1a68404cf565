--[[
  Pause a bucket: no reservation starts before now + delay. A longer pause already in place is kept.

  Input:
    KEYS[1] pause (string), µs of Redis time
    ARGV[1] delay, µs (integer >= 0); 0 only reads the pause
    ARGV[2] channel on which a new or longer pause is announced to every instance
    ARGV[3] bucket name (the message starts with it)

  Output: the pause's end after this call, µs from now (0 if none)
]]
--- @include "includes/redis-time"

local now = nowUs()
local untilUs = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current >= untilUs then return math.max(0, current - now) end
if tonumber(ARGV[1]) <= 0 then return 0 end
redis.call('SET', KEYS[1], string.format('%d', untilUs), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1)
-- "bucket|µs from now": a relative delay, so instances on hosts with skewed clocks agree.
redis.call('PUBLISH', ARGV[2], ARGV[3] .. '|' .. string.format('%d', untilUs - now))
return untilUs - now
