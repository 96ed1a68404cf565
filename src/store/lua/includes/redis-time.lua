--[[
  Redis's own clock, read inside the script: every instance, whatever its host's clock, then books
  against the same time. Included by scripts with `--- @include "includes/redis-time"`.

  nowUs(): µs of Redis time; nowMs(): whole ms of Redis time
]]
local function nowUs ()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function nowMs ()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
