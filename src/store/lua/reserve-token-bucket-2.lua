--[[
  Reserve a start time in a token bucket (GCRA), unless it would start later than the wait bound.

  Input:
    KEYS[1] bucket state (string): the theoretical arrival time "tat", in µs of Redis time
    KEYS[2] pause (string): no start before this time, in µs of Redis time
    ARGV[1] emission interval T, µs (integer)
    ARGV[2] burst tolerance tau = (burst - 1) * T, µs (integer)
    ARGV[3] cost, units (integer >= 1)
    ARGV[4] wait bound, µs (integer >= 0)

  Output: { admitted (1|0), wait µs, remaining (requests that could start now), reset µs, ticket (new tat, 0 if refused), start µs }
]]
--- @include "includes/redis-time"

local now = nowUs()
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local maxWait = tonumber(ARGV[4])

local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')

local base = math.max(tat, now, paused)
local newTat = base + interval * cost
local start = math.max(now, paused, newTat - interval - tau)
local wait = start - now

if wait > maxWait then
  local remaining = 0
  return { 0, wait, remaining, math.max(0, tat - now), 0, start }
end

redis.call('SET', KEYS[1], string.format('%d', newTat), 'PX', math.ceil((newTat - now) / 1000) + 1000)
local remaining = math.floor((now + tau + interval - newTat) / interval)
if remaining < 0 then remaining = 0 end
return { 1, wait, remaining, newTat - now, newTat, start }
