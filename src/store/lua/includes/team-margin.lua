--[[
  The team's margin: each instance measures its own (how late its requests leave), but a start is
  counted against whichever instance's start lies a window back, and a late start is covered by the
  margins the next window's starts were booked with, whoever booked them. The widest margin an
  instance booked with within the last window is kept under one key: a caller whose margin is at
  least that wide sets it (for `ttlMs`: a window), a narrower one books with the widest. So one
  instance's late path widens every instance's bookings at once. Included by the reserve scripts
  with `--- @include "includes/team-margin"`.

  teamMargin(key, margin µs, ttl ms): the margin to book with, µs (the caller's, or the team's when wider)
  teamTokenBucket(key, margin, interval, tau, units, ttl ms): interval and tau (µs) booked with it: a
    wider margin grows the interval by the difference shared among the `units` a window holds, and
    tau with it
  teamSlidingWindow(key, margin, window, pad, ttl ms): window and pad (µs) booked with it: a wider
    margin grows the window by the difference, and the pad to at least the wider margin
]]
local function teamMargin (key, margin, ttlMs)
  local shared = tonumber(redis.call('GET', key) or '0')
  if shared > margin then return shared end
  if margin > 0 then redis.call('SET', key, string.format('%d', margin), 'PX', math.max(1, ttlMs)) end
  return margin
end

local function teamTokenBucket (key, margin, interval, tau, units, ttlMs)
  local widest = teamMargin(key, margin, ttlMs)
  if widest <= margin then return interval, tau end
  local wider = interval + math.ceil((widest - margin) / units)
  return wider, tau / interval * wider
end

local function teamSlidingWindow (key, margin, window, pad, ttlMs)
  local widest = teamMargin(key, margin, ttlMs)
  if widest <= margin then return window, pad end
  return window + widest - margin, math.max(pad, widest)
end
