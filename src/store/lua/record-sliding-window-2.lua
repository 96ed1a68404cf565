--[[
  Record starts an instance made while it could not reach Redis (its local share during an outage),
  or that Redis lost (a new generation, includes/generation.lua), at the times they were made, so
  that the next reservations of every instance count them.

  Each start still inside the window is inserted where it belongs: the list stays non-decreasing.
  Reservations already booked were measured without them; from here on, none is.

  Input:
    KEYS[1] starts (list of µs of Redis time, non-decreasing)
    KEYS[2] generation (hash, includes/generation.lua): made if missing, kept as long as the starts
    ARGV[1] window W including the safety margin, µs (integer)
    ARGV[2..] the starts, µs of Redis time

  Output: how many were recorded
]]
--- @include "includes/redis-time"
--- @include "includes/generation"
--- @include "includes/sorted-insert"

local now = nowUs()
local window = tonumber(ARGV[1])
local recorded = 0
for i = 2, #ARGV do
  local at = tonumber(ARGV[i])
  if at > now - window then
    insertSorted(KEYS[1], at, string.format('%d', at), 1)
    recorded = recorded + 1
  end
end
if recorded > 0 then
  local newest = tonumber(redis.call('LINDEX', KEYS[1], -1))
  local ttlMs = math.max(1, math.ceil((newest + window - now) / 1000) + 1000)
  redis.call('PEXPIRE', KEYS[1], ttlMs)
  generation(KEYS[2], now)
  keepGeneration(KEYS[2], ttlMs)
end
return recorded
