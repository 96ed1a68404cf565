--[[
  Give back a token-bucket reservation, only if it is still the newest one: then no later
  reservation was computed from it and rolling "tat" back breaks no guarantee.

  Input:
    KEYS[1] bucket state (string): tat, µs
    ARGV[1] ticket: the tat this reservation set, µs
    ARGV[2] interval * cost, µs

  Output: 1 if given back, 0 if a later reservation exists (the slot is then simply not used)
]]
local tat = redis.call('GET', KEYS[1])
if tat ~= ARGV[1] then return 0 end
local previous = tonumber(ARGV[1]) - tonumber(ARGV[2])
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then
  redis.call('SET', KEYS[1], string.format('%d', previous), 'PX', pttl)
else
  redis.call('SET', KEYS[1], string.format('%d', previous))
end
return 1
