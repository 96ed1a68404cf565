--[[
  A token-bucket start reached the upstream later than the margin of the starts after it covers:
  the bucket's next starts come `by` later, and none sooner than one interval after now: `by` is
  counted to when the late request's headers were written, the upstream counted it when it arrived,
  and that was before its response came back. Starts already booked keep their times; the next ones
  move, so the start `limit` places after the late one is counted from when it left. A state gone
  (idle past its TTL) is set again.

  Input:
    KEYS[1] bucket state (string): tat, µs of Redis time
    ARGV[1] by, µs (the lateness the margin did not cover)
    ARGV[2] emission interval T, µs

  Output: the new tat, µs
]]
--- @include "includes/redis-time"

local now = nowUs()
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local moved = math.max(tat + tonumber(ARGV[1]), now + tonumber(ARGV[2]))
redis.call('SET', KEYS[1], string.format('%d', moved), 'PX', math.ceil((moved - now) / 1000) + 1000)
return moved
