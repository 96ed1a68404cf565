--[[
  Pause a bucket: no reservation starts before now + delay. A longer pause already in place is kept.

  Input:
    KEYS[1] pause (string), µs of Redis time
    ARGV[1] delay, µs (integer >= 0)

  Output: the pause's end after this call, µs from now (0 if none)
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untilUs = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current >= untilUs then return current - now end
redis.call('SET', KEYS[1], string.format('%d', untilUs), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1)
return untilUs - now
