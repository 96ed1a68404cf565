--[[
  Read a token bucket without changing it (status pages; never on the admission path).

  Input:
    KEYS[1] bucket state (string): tat, µs of Redis time
    KEYS[2] pause (string): no start before this time, µs of Redis time
    ARGV[1] emission interval T, µs (integer)
    ARGV[2] burst tolerance tau, µs (integer)

  Output: { remaining (requests that could start now), booked (reservations not yet paid back),
            reset µs (until the whole budget is back), paused µs (until a pause ends, 0 if none) }
]]
--- @include "includes/redis-time"

local now = nowUs()
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')

local ahead = math.max(0, tat - now)
local remaining = math.floor((tau + interval - ahead) / interval)
if remaining < 0 or paused > now then remaining = 0 end
return { remaining, math.ceil(ahead / interval), ahead, math.max(0, paused - now) }
