--[[
  Reserve a start time in a token bucket (GCRA), unless it would start later than the wait bound.

  Input:
    KEYS[1] bucket state (string): the theoretical arrival time "tat", in µs of Redis time
    KEYS[2] pause (string): no start before this time, in µs of Redis time
    KEYS[3] generation (hash, includes/generation.lua)
    KEYS[4] margin (string): the widest margin an instance booked with within the last window, µs
    ARGV[1] emission interval T, µs (integer)
    ARGV[2] burst tolerance tau = (burst - 1) * T, µs (integer)
    ARGV[3] cost, units (integer >= 1)
    ARGV[4] wait bound, µs (integer >= 0)
    ARGV[5] window and margin, µs: the generation outlives every start by this much
    ARGV[6] the generation the caller last saw, if it has starts of the last window ('0': none)
    ARGV[7] gather after a loss, µs; ARGV[8] channel the loss is announced on; ARGV[9] bucket name
    ARGV[10] the caller's margin, µs: the part of ARGV[5] that is margin
    ARGV[11] the units one window's span is shared among (limit - burst + 1): ARGV[1] is ARGV[5] / that

  The margin is the team's (includes/team-margin.lua): a start that leaves late is covered by the
  margins the next window's starts were booked with, and those are booked by every instance. A caller
  narrower than the widest booked within the last window books with the widest: its interval (and
  burst tolerance) grows by the difference shared among the window's units. So one instance's late
  path widens every instance's spacing at once, instead of a third of it when three share the bucket.

  Output: { admitted (1|0), wait µs, remaining (requests that could start now), reset µs, ticket (new tat, 0 if refused), start µs, generation }
          or, booking nothing, { 2, µs until the gather after a loss ends, 0, 0, 0, now, generation }
]]
--- @include "includes/redis-time"
--- @include "includes/generation"
--- @include "includes/team-margin"

local now = nowUs()
local gen, unbooked = watchGeneration(KEYS[3], now, ARGV[6], ARGV[7], ARGV[8], ARGV[9])
if unbooked then return unbooked end
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local margin = tonumber(ARGV[10] or '0')
interval, tau = teamTokenBucket(KEYS[4], margin, interval, tau, tonumber(ARGV[11]), math.ceil(tonumber(ARGV[5]) / 1000))
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
  return { 0, wait, remaining, math.max(0, tat - now), 0, start, tonumber(gen) }
end

redis.call('SET', KEYS[1], string.format('%d', newTat), 'PX', math.ceil((newTat - now) / 1000) + 1000)
keepGeneration(KEYS[3], math.ceil((math.max(newTat, start + tonumber(ARGV[5])) - now) / 1000) + 1000)
local remaining = math.floor((now + tau + interval - newTat) / interval)
if remaining < 0 then remaining = 0 end
return { 1, wait, remaining, newTat - now, newTat, start, tonumber(gen) }
