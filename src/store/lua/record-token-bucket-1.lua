--[[
  Record starts an instance made while it could not reach Redis (its local share during an outage):
  each one moves the theoretical arrival time on by one interval from its own time, as if it had been
  reserved here then. Starts already booked in Redis after them are not moved; the next ones are.

  Input:
    KEYS[1] bucket state (string): tat, µs of Redis time
    ARGV[1] emission interval T, µs (integer)
    ARGV[2..] the starts, µs of Redis time, oldest first

  Output: the new tat, µs
]]
--- @include "includes/redis-time"

local now = nowUs()
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
for i = 2, #ARGV do
  tat = math.max(tat, tonumber(ARGV[i])) + interval
end
if tat > now then
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return tat
