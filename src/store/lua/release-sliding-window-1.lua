--[[
  Give back a sliding-window reservation, only if its starts are still the newest ones (so no
  later reservation was measured against them).

  Input:
    KEYS[1] starts (list, µs)
    ARGV[1] ticket: the start this reservation pushed, µs
    ARGV[2] cost: how many entries it pushed

  Output: 1 if given back, 0 otherwise
]]
local cost = tonumber(ARGV[2])
for i = 1, cost do
  if redis.call('LINDEX', KEYS[1], -i) ~= ARGV[1] then return 0 end
end
for _ = 1, cost do redis.call('RPOP', KEYS[1]) end
return 1
