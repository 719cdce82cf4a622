--[[
Global provider rate limit (GCRA reservation, burst 1), shared by every worker process and
machine, on the Redis server's clock.

KEYS[1]  the provider's TAT: the earliest time the next request may start
KEYS[2]  this minute's counters hash (alerts): a reserved slot counts a provider attempt
ARGV     interval (s between requests = 1 / allowed rate), max_wait (s), penalty (s)

penalty = 0: reserve the next slot. Returns {1, wait}: start after `wait` seconds. When the
  slot is more than max_wait away nothing is reserved: {0, wait}.
penalty > 0: the provider answered 429 with Retry-After = penalty: no request anywhere may
  start before now + penalty. Returns {0, wait}.

One call per admitted request, no polling: each caller learns its own start time, so waiters
never stampede.
]]

local interval = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local penalty = tonumber(ARGV[3])

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)

if penalty > 0 then
  tat = math.max(tat, now + penalty)
  redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
  return {0, tostring(tat - now)}
end

local wait = tat - now
if wait > max_wait then
  return {0, tostring(wait)}
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.6f', next_tat), 'PX',
           math.ceil((next_tat - now) * 1000) + 1000)
if KEYS[2] then
  redis.call('HINCRBY', KEYS[2], 'provider_attempts', 1)
  redis.call('EXPIRE', KEYS[2], 7200)
end
return {1, tostring(wait)}
