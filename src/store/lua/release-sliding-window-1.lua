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
--- @include "includes/sorted-insert"

local cost = tonumber(ARGV[2])
-- From the newest end: a reservation being given back is most often among the newest entries.
local removed = redis.call('LREM', KEYS[1], -cost, ARGV[1])
if removed == cost then return 1 end
-- Not all of them: put back what was taken.
if removed > 0 then insertSorted(KEYS[1], tonumber(ARGV[1]), ARGV[1], removed) end
return 0
