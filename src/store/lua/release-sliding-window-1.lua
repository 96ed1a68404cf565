--[[
  Give back a sliding-window reservation whose request never left: its `cost` entries are taken out
  of the list, wherever they are. A list without some of its starts still has at most `limit` in any
  window (it is what the upstream saw), and the next reservation is measured against it as always;
  those booked since against the entries taken out were booked later than they had to be, never
  earlier. So a start that left too late to be kept, booked again, takes its own freed slot instead
  of one more at the end of the backlog (a window more for the last request of a burst).

  Entries of equal value are interchangeable (the list is ordered and `recorded` is never before the
  newest, so several reservations can hold one time): whichever `cost` of them go, the list is the same.

  Input:
    KEYS[1] starts (list, µs, non-decreasing)
    ARGV[1] ticket: the start this reservation pushed, µs
    ARGV[2] cost: how many entries it pushed

  Output: 1 if given back, 0 otherwise (fewer than `cost` such entries: trimmed, or the state was lost)
]]
local cost = tonumber(ARGV[2])
local tail = redis.call('LRANGE', KEYS[1], -cost, -1)
local newest = #tail == cost
for i = 1, #tail do
  if tail[i] ~= ARGV[1] then newest = false end
end
if newest then
  for _ = 1, cost do redis.call('RPOP', KEYS[1]) end
  return 1
end
local removed = redis.call('LREM', KEYS[1], -cost, ARGV[1])
if removed == cost then return 1 end
if removed > 0 then
  -- Not all of them: put back what was taken, before the first entry later than it (binary search).
  local at = tonumber(ARGV[1])
  local len = redis.call('LLEN', KEYS[1])
  local lo, hi = 0, len
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if tonumber(redis.call('LINDEX', KEYS[1], mid)) > at then hi = mid else lo = mid + 1 end
  end
  for _ = 1, removed do
    if lo == len then
      redis.call('RPUSH', KEYS[1], ARGV[1])
    else
      redis.call('LINSERT', KEYS[1], 'BEFORE', redis.call('LINDEX', KEYS[1], lo), ARGV[1])
    end
  end
end
return 0
