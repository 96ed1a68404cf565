--[[
  Reserve a start time in an exact sliding window ("at most N starts in any window W"), unless it
  would start later than the wait bound. The list holds the newest reserved start times, oldest
  first; starts come out non-decreasing, so each reservation is O(1): a new start is at least W
  after the start N - cost + 1 places back.

  Input:
    KEYS[1] starts (list of µs of Redis time, non-decreasing)
    KEYS[2] pause (string): no start before this time, µs
    KEYS[3] floor (string): the newest start trimmed off the list, µs
    KEYS[4] generation (hash, includes/generation.lua)
    KEYS[5] margin (string): the widest margin an instance booked with within the last window, µs
    ARGV[1] limit N (integer)
    ARGV[2] window W including the safety margin, µs (integer)
    ARGV[3] cost, units (integer, 1..N)
    ARGV[4] wait bound, µs (integer >= 0)
    ARGV[5] how many starts to keep (N plus a few, so a given-back start loses nothing); the list is
            trimmed back to it once it holds that many more
    ARGV[6] pad, µs: a start the window had room for is recorded this much later (see below)
    ARGV[7] the generation the caller last saw, if it has starts of the last window ('0': none)
    ARGV[8] gather after a loss, µs; ARGV[9] channel the loss is announced on; ARGV[10] bucket name
    ARGV[11] the caller's margin, µs: the part of ARGV[2] (and ARGV[6]) that is margin

  The margin is the team's (includes/team-margin.lua): every instance books with the widest one
  booked within the last window, and a window's starts keep its spread instead of growing by the
  instances' differences each window
  (the list never goes back, so a start one instance books earlier than another's is moved up).

  A start the window had room for while the list holds no start `limit` places back (a burst from
  an idle bucket: its first window), or the first after a pause: such requests often open new
  connections to the upstream and arrive later than the next window's, which waited for their slots
  on warm connections. They are recorded `pad` later (the next window is measured from there); what
  is recorded never goes back in time, so the list stays in order. Recording later than the start is
  always within the limit. A start the window had room for because the one `limit` places back is
  already a window old is a busy bucket's (a backlog booked a little after its slots came due): it is
  not padded, or every such start would push the rest of its window one pad later.

  The starts trimmed off the oldest end may still be ahead (a backlog's). Given-back starts can leave
  the list with fewer than N - cost + 1 entries: the start that many places back was then trimmed,
  and the newest trimmed one (floor) stands in for it. It is at least as new, so the answer is never
  earlier than the exact one; it is exact when the list holds N - cost entries.

  Output: { admitted (1|0), wait µs, remaining (requests that could start now), reset µs, ticket (the start as recorded, 0 if refused), start µs, generation }
          or, booking nothing, { 2, µs until the gather after a loss ends, 0, 0, 0, now, generation }
]]
--- @include "includes/redis-time"
--- @include "includes/generation"
--- @include "includes/team-margin"

local now = nowUs()
local gen, unbooked = watchGeneration(KEYS[4], now, ARGV[7], ARGV[8], ARGV[9], ARGV[10])
if unbooked then return unbooked end
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local maxWait = tonumber(ARGV[4])
local keep = tonumber(ARGV[5])
local pad = tonumber(ARGV[6] or '0')
local margin = tonumber(ARGV[11] or '0')
window, pad = teamSlidingWindow(KEYS[5], margin, window, pad, math.ceil(window / 1000))

local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
local len = redis.call('LLEN', KEYS[1])
local start = math.max(now, paused)
local back = limit - cost + 1
local roomy = true
local ref
if len >= back then
  ref = tonumber(redis.call('LINDEX', KEYS[1], -back)) + window
else
  local floor = redis.call('GET', KEYS[3])
  if floor then ref = tonumber(floor) + window end
end
if ref and ref > start then
  start = ref
  roomy = false
end
local wait = start - now

-- Starts still inside the window that ends now: binary search over the newest `limit` entries.
local function used (at)
  local n = math.min(len, limit)
  local lo, hi = 0, n
  -- count of the newest n entries that are > at - window
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local v = tonumber(redis.call('LINDEX', KEYS[1], -(mid + 1)))
    if v > at - window then lo = mid + 1 else hi = mid end
  end
  return lo
end

if wait > maxWait then
  local last = len > 0 and tonumber(redis.call('LINDEX', KEYS[1], -1)) or now
  return { 0, wait, 0, math.max(0, last + window - now), 0, start, tonumber(gen) }
end

local recorded = start
if roomy and (ref == nil or paused > now) then recorded = start + pad end
if len > 0 then
  local last = tonumber(redis.call('LINDEX', KEYS[1], -1))
  if last > recorded then recorded = last end
end
for _ = 1, cost do
  redis.call('RPUSH', KEYS[1], string.format('%d', recorded))
end
len = len + cost
if len > keep + 32 then
  -- Trimmed in batches; the newest start trimmed is kept as long as a window could still hold it.
  local floor = tonumber(redis.call('LINDEX', KEYS[1], -(keep + 1)))
  redis.call('LTRIM', KEYS[1], -keep, -1)
  len = keep
  redis.call('SET', KEYS[3], string.format('%d', floor), 'PX', math.max(1, math.ceil((floor + window - now) / 1000) + 1000))
end
local ttlMs = math.ceil((recorded + window - now) / 1000) + 1000
redis.call('PEXPIRE', KEYS[1], ttlMs)
keepGeneration(KEYS[4], ttlMs)
local remaining = 0
if start <= now then remaining = math.max(0, limit - used(now)) end
return { 1, wait, remaining, recorded + window - now, recorded, start, tonumber(gen) }
