--[[
  Read an exact sliding window without changing it (status pages; never on the admission path).

  Input:
    KEYS[1] starts (list of µs of Redis time, non-decreasing)
    KEYS[2] pause (string): no start before this time, µs of Redis time
    KEYS[3] floor (string): the newest start trimmed off the list, µs (see the reserve script)
    ARGV[1] limit N (integer)
    ARGV[2] window W including the safety margin, µs (integer)

  Output: { remaining (N minus booked), booked (starts in the window that ends now, plus those
            reserved for later), reset µs (until the whole budget is back), paused µs (0 if none) }

  The list keeps only the newest N plus a few starts. A backlog longer than that has older starts,
  trimmed off, that are still in the window or ahead; the floor says so (it is newer than now - W).
  They are counted from the list's N oldest entries: in a backlog each start is W after the one N
  before it, so an entry e stands for the ceil((e - now) / W) starts of its chain between now - W and
  it, all trimmed. That is exact for a backlog booked without gaps once its first start is a margin old
  (that start is recorded a margin late); gaps (a pause, starts given back) are counted as if booked. ceil((e - now) / W) only grows along the list, so each of its values is found
  by a binary search: O(log N) reads per value, a few values in a backlog.
]]
--- @include "includes/redis-time"

local now = nowUs()
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
local len = redis.call('LLEN', KEYS[1])

local function at (i)
  return tonumber(redis.call('LINDEX', KEYS[1], i))
end

-- Entries newer than now - W: binary search from the newest end (the list is non-decreasing).
local lo, hi = 0, len
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  if at(-(mid + 1)) > now - window then lo = mid + 1 else hi = mid end
end
local booked = lo

if len > 0 and booked == len and tonumber(redis.call('GET', KEYS[3]) or '0') > now - window then
  local n = math.min(limit, len)
  local j = 0
  while j < n do
    local chain = math.max(0, math.ceil((at(j) - now) / window))
    -- the first index past j whose entry stands for more than `chain` starts
    local a, b = j + 1, n
    while a < b do
      local mid = math.floor((a + b) / 2)
      if at(mid) - now <= chain * window then a = mid + 1 else b = mid end
    end
    booked = booked + chain * (a - j)
    j = a
  end
end

local reset = 0
if len > 0 then reset = math.max(0, at(-1) + window - now) end
local remaining = math.max(0, limit - booked)
if paused > now then remaining = 0 end
return { remaining, booked, reset, math.max(0, paused - now) }
