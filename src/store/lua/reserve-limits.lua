--[[
  Reserve one start time in several limits at once (a route with `limit: [5000/h, 900/min]`): the
  earliest start that every limit allows, booked in all of them, or in none when it is later than the
  wait bound. Each limit is a token bucket (GCRA) or an exact sliding window, with the arithmetic of
  reserve-token-bucket-2.lua and reserve-sliding-window-3.lua; with one limit this script answers
  exactly what they answer. Called with numberOfKeys = 1 + 3 × (number of limits); on a Redis Cluster
  every key shares one hash tag (see redis-keys.ts).

  Input:
    KEYS[1] pause of the request's bucket (string): no start before this time, µs of Redis time
    KEYS[3i-1], KEYS[3i], KEYS[3i+1] limit i: its state (token bucket: tat, µs; sliding window: list
                of starts, µs, non-decreasing), for a sliding window its floor (the newest start
                trimmed), and its team margin (includes/team-margin.lua)
    ARGV[1] number of limits n
    ARGV[2] wait bound, µs (integer >= 0)
    ARGV[3 + 8(i-1) ..] limit i: algorithm (1 token bucket, 2 sliding window), then
                token bucket: interval T µs, tau µs, cost, 0, 0, margin µs, units (limit - burst + 1)
                sliding window: limit N, window W (with margin) µs, cost, keep, pad µs, margin µs, 0
                A cost of 0 leaves the limit untouched (a limit that counts only some requests).

  Each limit's margin is the team's, as in the one-limit scripts: a caller narrower than the widest
  an instance booked that limit with within its last window books with the widest (a token bucket's
  interval and tau grow by the difference shared among its units; a sliding window's window grows by
  it, and its pad is at least it). Only a route's first limit follows the adaptive margin, so the
  others' margins are the same on every instance and never widen.

  A token bucket books a start S at max(tat, S) + T × cost: S at or after its own earliest start keeps
  the GCRA bound (cost <= burst). A sliding window books S when it is at least W after the start
  N - cost + 1 places back: true for every S at or after its own earliest start. So the common start
  is the latest of the limits' earliest starts. It is padded (see the sliding-window script) only
  when no limit made it wait (then, and only then, the windows had room for it), in a sliding window
  without a start `limit` places back or after a pause.

  Output: { admitted (1|0), wait µs, remaining (the least of the limits'), reset µs (the binding
            limit's), binding (index of the limit that set the start, or with the least remaining),
            start µs, then per limit: ticket (the tat or start it recorded; 0 if none), remaining, reset µs }
]]
--- @include "includes/redis-time"
--- @include "includes/team-margin"

local now = nowUs()
local n = tonumber(ARGV[1])
local maxWait = tonumber(ARGV[2])
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
local floorStart = math.max(now, paused)
local start = floorStart
local binding = 1
local lims = {}

-- Starts of a sliding window inside the window that ends at `at`: binary search over its newest `limit`.
local function used (l, at)
  local lo, hi = 0, math.min(l.len, l.p1)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if tonumber(redis.call('LINDEX', l.key, -(mid + 1))) > at - l.p2 then lo = mid + 1 else hi = mid end
  end
  return lo
end

local function last (l)
  if l.len == 0 then return nil end
  return tonumber(redis.call('LINDEX', l.key, -1))
end

for i = 1, n do
  local a = 2 + (i - 1) * 8
  local l = { algo = tonumber(ARGV[a + 1]), p1 = tonumber(ARGV[a + 2]), p2 = tonumber(ARGV[a + 3]), cost = tonumber(ARGV[a + 4]),
    keep = tonumber(ARGV[a + 5]), pad = tonumber(ARGV[a + 6]), key = KEYS[3 * i - 1], floorKey = KEYS[3 * i] }
  if l.cost > 0 then
    local margin, units = tonumber(ARGV[a + 7]), tonumber(ARGV[a + 8])
    if l.algo == 1 then
      l.p1, l.p2 = teamTokenBucket(KEYS[3 * i + 1], margin, l.p1, l.p2, units, math.ceil(l.p1 * units / 1000))
    else
      l.p2, l.pad = teamSlidingWindow(KEYS[3 * i + 1], margin, l.p2, l.pad, math.ceil(l.p2 / 1000))
    end
  end
  local earliest = floorStart
  if l.algo == 1 then
    l.tat = tonumber(redis.call('GET', l.key) or '0')
    if l.cost > 0 then earliest = math.max(earliest, math.max(l.tat, now) + l.p1 * (l.cost - 1) - l.p2) end
  else
    l.len = redis.call('LLEN', l.key)
    if l.cost > 0 then
      local back = l.p1 - l.cost + 1
      local ref
      if l.len >= back then
        ref = tonumber(redis.call('LINDEX', l.key, -back)) + l.p2
      else
        local floor = redis.call('GET', l.floorKey)
        if floor then ref = tonumber(floor) + l.p2 end
      end
      l.ref = ref
      if ref and ref > earliest then earliest = ref end
    end
  end
  if earliest > start then
    start = earliest
    binding = i
  end
  lims[i] = l
end

local wait = start - now
local out = { 0, wait, 0, 0, binding, start }
if wait > maxWait then
  for i = 1, n do
    local l = lims[i]
    local reset = 0
    if l.algo == 1 then reset = math.max(0, l.tat - now) else
      local newest = last(l)
      if newest then reset = math.max(0, newest + l.p2 - now) end
    end
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = reset
  end
  out[4] = out[6 + 3 * binding]
  return out
end

local roomy = start == floorStart
local least
for i = 1, n do
  local l = lims[i]
  local ticket, remaining, reset = 0, 0, 0
  if l.algo == 1 then
    local tat = l.tat
    if l.cost > 0 then
      tat = math.max(l.tat, start) + l.p1 * l.cost
      redis.call('SET', l.key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
      ticket = tat
    end
    remaining = math.max(0, math.floor((now + l.p2 + l.p1 - math.max(tat, now)) / l.p1))
    reset = math.max(0, tat - now)
  else
    local newest = last(l)
    if l.cost > 0 then
      local recorded = start
      if roomy and (l.ref == nil or paused > now) then recorded = start + l.pad end
      if newest and newest > recorded then recorded = newest end
      for _ = 1, l.cost do redis.call('RPUSH', l.key, string.format('%d', recorded)) end
      l.len = l.len + l.cost
      if l.len > l.keep + 32 then
        local floor = tonumber(redis.call('LINDEX', l.key, -(l.keep + 1)))
        redis.call('LTRIM', l.key, -l.keep, -1)
        l.len = l.keep
        redis.call('SET', l.floorKey, string.format('%d', floor), 'PX', math.max(1, math.ceil((floor + l.p2 - now) / 1000) + 1000))
      end
      redis.call('PEXPIRE', l.key, math.ceil((recorded + l.p2 - now) / 1000) + 1000)
      ticket = recorded
      newest = recorded
    end
    if start <= now then remaining = math.max(0, l.p1 - used(l, now)) end
    if newest then reset = math.max(0, newest + l.p2 - now) end
  end
  if start > now then remaining = 0 end
  if least == nil or remaining < least then
    least = remaining
    if start <= floorStart and start <= now then binding = i end
  end
  out[#out + 1] = ticket
  out[#out + 1] = remaining
  out[#out + 1] = reset
end
out[1] = 1
out[3] = least
out[4] = out[6 + 3 * binding]
return out
