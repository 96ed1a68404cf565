--[[
  Insert into a list of starts kept in order (µs, non-decreasing), where the value belongs. Included
  by scripts with `--- @include "includes/sorted-insert"`.

  insertSorted(key, at, value, count): `count` copies of `value` (the text of `at`) after every entry
    not later than it (a binary search from the oldest end)
]]
local function insertSorted (key, at, value, count)
  local len = redis.call('LLEN', key)
  local lo, hi = 0, len
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if tonumber(redis.call('LINDEX', key, mid)) > at then hi = mid else lo = mid + 1 end
  end
  for _ = 1, count do
    if lo == len then
      redis.call('RPUSH', key, value)
    else
      -- LINSERT finds its pivot from the oldest end: the first entry with that value is at `lo`.
      redis.call('LINSERT', key, 'BEFORE', redis.call('LINDEX', key, lo), value)
    end
  end
end
