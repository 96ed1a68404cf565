--[[
  Read an exact sliding window without changing it (status pages; never on the admission path).

  Input:
    KEYS[1] starts (list of µs of Redis time, non-decreasing)
    KEYS[2] pause (string): no start before this time, µs of Redis time
    ARGV[1] limit N (integer)
    ARGV[2] window W including the safety margin, µs (integer)

  Output: { remaining (N minus booked), booked (starts in the window that ends now, plus those
            reserved for later), reset µs (until the whole budget is back), paused µs (0 if none) }
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
local len = redis.call('LLEN', KEYS[1])

-- Entries newer than now - W: binary search from the newest end (the list is non-decreasing).
local lo, hi = 0, len
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  local v = tonumber(redis.call('LINDEX', KEYS[1], -(mid + 1)))
  if v > now - window then lo = mid + 1 else hi = mid end
end
local booked = lo
local reset = 0
if len > 0 then reset = math.max(0, tonumber(redis.call('LINDEX', KEYS[1], -1)) + window - now) end
local remaining = math.max(0, limit - booked)
if paused > now then remaining = 0 end
return { remaining, booked, reset, math.max(0, paused - now) }
