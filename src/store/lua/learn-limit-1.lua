--[[
  A bucket's learned limit (learned-limit.ts): read it, lower it on pushback, or probe it up, in one
  atomic step against every instance's changes. Kept in its own hash beside the bucket's keys, with
  a TTL renewed on every change; each change is announced on a channel.

  Input:
    KEYS[1] learned (hash): limit, window (ms), kind, changed, pushback (ms of Redis time), failed, raised
    ARGV[1] op: get | lower | raise
    lower: ARGV[2] limit, ARGV[3] window ms, ARGV[4] kind, ARGV[5] probe ms (a raise this recent that is
           pushed back is a failed probe), ARGV[6] ttl ms, ARGV[7] channel, ARGV[8] bucket
    raise: ARGV[2] from, ARGV[3] to (0: forget), ARGV[4] window ms, ARGV[5] kind, ARGV[6] quiet ms,
           ARGV[7] ttl ms, ARGV[8] channel, ARGV[9] bucket

  Output: {limit, window ms, kind, ms since change, ms since pushback, failed probes}, or {} when none
]]
--- @include "includes/redis-time"

local key = KEYS[1]
local now = nowMs()

local function reply ()
  local h = redis.call('HMGET', key, 'limit', 'window', 'kind', 'changed', 'pushback', 'failed')
  if not h[1] then return {} end
  return { tonumber(h[1]), tonumber(h[2]), h[3], now - tonumber(h[4]), now - tonumber(h[5]), tonumber(h[6]) }
end

local op = ARGV[1]
if op == 'get' then return reply() end

if op == 'lower' then
  local limit = tonumber(ARGV[2])
  local kept = tonumber(redis.call('HGET', key, 'limit') or '0')
  if kept > 0 then redis.call('HSET', key, 'pushback', now) end
  if kept == 0 or limit < kept then
    local failed = tonumber(redis.call('HGET', key, 'failed') or '0')
    local changed = tonumber(redis.call('HGET', key, 'changed') or '0')
    if redis.call('HGET', key, 'raised') == '1' and now - changed <= tonumber(ARGV[5]) then failed = failed + 1 end
    redis.call('HSET', key, 'limit', limit, 'window', ARGV[3], 'kind', ARGV[4], 'changed', now, 'pushback', now, 'failed', failed, 'raised', 0)
    redis.call('PUBLISH', ARGV[7], ARGV[8])
  end
  redis.call('PEXPIRE', key, ARGV[6])
  return reply()
end

-- raise
local kept = tonumber(redis.call('HGET', key, 'limit') or '0')
if kept == 0 or kept ~= tonumber(ARGV[2]) then return reply() end
local changed = tonumber(redis.call('HGET', key, 'changed'))
local pushback = tonumber(redis.call('HGET', key, 'pushback'))
if now - math.max(changed, pushback) < tonumber(ARGV[6]) then return reply() end
if tonumber(ARGV[3]) <= 0 then
  redis.call('DEL', key)
  redis.call('PUBLISH', ARGV[8], ARGV[9])
  return {}
end
redis.call('HSET', key, 'limit', ARGV[3], 'window', ARGV[4], 'kind', ARGV[5], 'changed', now, 'raised', 1)
redis.call('PEXPIRE', key, ARGV[7])
redis.call('PUBLISH', ARGV[8], ARGV[9])
return reply()
