--[[
  A token-bucket start reached the upstream later than the margin of the starts after it covers:
  the bucket's next starts come `by` later. Starts already booked keep their times; the next ones
  move, so the start `limit` places after the late one is still a window after it (each start is one
  interval after the one before it, and `limit` intervals are a window and the margin). With the
  state gone (idle for longer than its TTL), the late start is the bucket's newest: the next one
  comes no sooner than an interval less the margin after now, as it would after the late start.

  Input:
    KEYS[1] bucket state (string): tat, µs of Redis time
    ARGV[1] by, µs (the lateness the margin did not cover)
    ARGV[2] emission interval T, µs
    ARGV[3] margin, µs

  Output: the new tat, µs
]]
--- @include "includes/redis-time"

local now = nowUs()
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local moved = tat + tonumber(ARGV[1])
if tat == 0 then moved = now + tonumber(ARGV[2]) - tonumber(ARGV[3]) end
if moved > now then
  redis.call('SET', KEYS[1], string.format('%d', moved), 'PX', math.ceil((moved - now) / 1000) + 1000)
end
return moved
