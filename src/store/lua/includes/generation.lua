--[[
  A bucket's generation: a hash next to its state (same hash tag) that says which incarnation of the
  state this is. It is created with the state (field g: Redis time in µs when it was made) and lives
  at least as long as the state and a window after the newest start, so it vanishes with the state
  when the state is lost (FLUSHALL, eviction, a promoted replica that missed writes) and not before
  any instance's starts of the last window are a window old. An instance that has starts of the last
  window sends the generation it last saw; another one means the state it booked in is gone.

  After a loss (field until: µs) nothing is booked for a short gather time: every instance that has
  starts of the last window hears of the loss (published on the pause channel as "bucket|gen|lost")
  and records them, so that what is booked afterwards is measured against all of them.

  generation(key, now): the generation (string), made if missing
  keepGeneration(key, ttlMs): the generation lives at least ttlMs more
  gathering(key, now): µs until the gather after a loss ends (0 when none)
  lostState(key, now, gatherUs, channel, bucket, gen): start a gather (or keep a longer one), announce
    the loss, and return the reply of a reservation that booked nothing: { 2, µs to wait, 0, 0, 0, now, gen }
]]
local function generation (key, now)
  local gen = redis.call('HGET', key, 'g')
  if gen then return gen end
  gen = string.format('%d', now)
  redis.call('HSET', key, 'g', gen)
  redis.call('PEXPIRE', key, 1000)
  return gen
end

local function keepGeneration (key, ttlMs)
  if redis.call('PTTL', key) < ttlMs then redis.call('PEXPIRE', key, ttlMs) end
end

local function gathering (key, now)
  local untilUs = tonumber(redis.call('HGET', key, 'until') or '0')
  return math.max(0, untilUs - now)
end

local function lostState (key, now, gatherUs, channel, bucket, gen)
  local untilUs = math.max(now + gatherUs, tonumber(redis.call('HGET', key, 'until') or '0'))
  redis.call('HSET', key, 'until', string.format('%d', untilUs))
  keepGeneration(key, math.ceil((untilUs - now) / 1000) + 1000)
  redis.call('PUBLISH', channel, bucket .. '|' .. gen .. '|lost')
  return { 2, untilUs - now, 0, 0, 0, now, tonumber(gen) }
end

local function watchGeneration (key, now, expect, gatherUs, channel, bucket)
  local gen = generation(key, now)
  if expect ~= '0' and expect ~= gen and gathering(key, now) == 0 then
    return gen, lostState(key, now, tonumber(gatherUs), channel, bucket, gen)
  end
  local gather = gathering(key, now)
  if gather > 0 then return gen, { 2, gather, 0, 0, 0, now, tonumber(gen) } end
  return gen, nil
end
