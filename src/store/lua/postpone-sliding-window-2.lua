--[[
  Move a late start's record to when it really leaves, if no start booked since is counted against
  the later time: a start that leaves later than its margin allows is safe when the start `limit`
  places after it (the next window's, booked from it) is not booked yet, or far enough away. Then
  the request leaves now instead of waiting for a slot a window later (booking again).

  Input:
    KEYS[1] starts (list of µs, non-decreasing)
    KEYS[2] margin: the team's (includes/team-margin.lua); the check uses it when wider
    ARGV[1] limit N; ARGV[2] window W including the margin, µs; ARGV[3] cost (entries of the start)
    ARGV[4] ticket: the start as recorded, µs
    ARGV[5] ahead, µs: the start is recorded this long after Redis's now (the reply's way back)
    ARGV[6] the caller's margin, µs: the part of ARGV[2] that is margin

  Only the windows [s, s + W) that hold the new time and not the old one (s in (ticket, at]) gain
  entries: none of them may hold more than `limit` after the move. Every other window holds what it
  held or fewer, so starts booked with a narrower margin than today's (W grows with the margin) are
  no reason to keep a late start where it is: the move makes no window fuller than it was unless it
  stays within the limit. The list is read whole: at most its keep (limit + 32) plus 32 entries, and
  this runs only for a start that left late.

  Output: { 1, new ticket µs } if moved, { 0, 0 } if not (left as it was)
]]
--- @include "includes/redis-time"

local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local shared = tonumber(redis.call('GET', KEYS[2]) or '0')
local margin = tonumber(ARGV[6] or '0')
if shared > margin then window = window + shared - margin end
local cost = tonumber(ARGV[3])
local ticket = tonumber(ARGV[4])
local at = nowUs() + tonumber(ARGV[5])
if at <= ticket then return { 0, 0 } end

local old = redis.call('LRANGE', KEYS[1], 0, -1)
local kept, removed = {}, 0
for i = 1, #old do
  local v = tonumber(old[i])
  if v == ticket and removed < cost then removed = removed + 1 else kept[#kept + 1] = v end
end
if removed < cost then return { 0, 0 } end

-- The new list: `cost` entries at `at`, after every entry not later than it.
local place = #kept + 1
for i = 1, #kept do
  if kept[i] > at then
    place = i
    break
  end
end
local list = {}
for i = 1, place - 1 do list[#list + 1] = kept[i] end
for _ = 1, cost do list[#list + 1] = at end
for i = place, #kept do list[#list + 1] = kept[i] end

-- Entries of the new list at or after x: the first index holding x or more (#list + 1: none).
local function from (x)
  local lo, hi = 1, #list + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if list[mid] < x then lo = mid + 1 else hi = mid end
  end
  return lo
end
-- The fullest such window starts just after the ticket, or just as an entry comes into it.
local function tooFull (s)
  return from(s + window) - from(s) > limit
end
if tooFull(ticket + 1) then return { 0, 0 } end
for i = from(ticket + window + 1), from(at + window) - 1 do
  if tooFull(list[i] - window + 1) then return { 0, 0 } end
end

redis.call('LREM', KEYS[1], cost, ARGV[4])
local formatted = string.format('%d', at)
if place > #kept then
  for _ = 1, cost do redis.call('RPUSH', KEYS[1], formatted) end
else
  local pivot = string.format('%d', kept[place])
  for _ = 1, cost do redis.call('LINSERT', KEYS[1], 'BEFORE', pivot, formatted) end
end
local ttl = redis.call('PTTL', KEYS[1])
local need = math.ceil((at + window - nowUs()) / 1000) + 1000
if ttl < need then redis.call('PEXPIRE', KEYS[1], need) end
return { 1, at }
