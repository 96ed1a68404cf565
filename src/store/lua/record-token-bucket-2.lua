--[[
  Record starts an instance made while it could not reach Redis (its local share during an outage),
  or that Redis lost (a new generation, includes/generation.lua):
  each one moves the theoretical arrival time on by one interval from its own time, as if it had been
  reserved here then. Starts already booked in Redis after them are not moved; the next ones are.

  Input:
    KEYS[1] bucket state (string): tat, µs of Redis time
    KEYS[2] generation (hash, includes/generation.lua): made if missing, kept a window after the newest start
    ARGV[1] emission interval T, µs (integer)
    ARGV[2] window and margin, µs
    ARGV[3..] the starts, µs of Redis time, oldest first

  Output: the new tat, µs
]]
--- @include "includes/redis-time"
--- @include "includes/generation"

local now = nowUs()
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local newest = 0
for i = 3, #ARGV do
  newest = math.max(newest, tonumber(ARGV[i]))
  tat = math.max(tat, newest) + interval
end
if #ARGV >= 3 then
  generation(KEYS[2], now)
  keepGeneration(KEYS[2], math.max(1, math.ceil((newest + tonumber(ARGV[2]) - now) / 1000) + 1000))
end
if tat > now then
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return tat
