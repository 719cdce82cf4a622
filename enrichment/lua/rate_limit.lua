--[[
Per-workspace API rate limit: one atomic decision per request.

Two rules, both on the Redis server's clock (TIME), so clients with skewed clocks cannot
over-admit:
  1. a token bucket refilling at `rate` tokens/s with capacity `burst`;
  2. a sliding log: never more than `limit` admitted requests in any `window` seconds.
The bucket alone can exceed RPM in a minute (burst + 60*rate > RPM for some plans, e.g. core:
1 + 30 > 30); the log makes "never more than RPM in any 60 s" exact.

KEYS[1]  hash  {tokens, ts, seq}     the bucket
KEYS[2]  zset  member -> admit time  the sliding log
KEYS[3]  hash  (optional)            this minute's counters: requests, rejected (for alerts)
ARGV     rate, burst, limit, window

Returns {allowed (0/1), remaining, retry_after, t, now}; the last three as strings (floats).
  remaining    requests that could be admitted right after this one
  retry_after  seconds until a denied request could be admitted
  t            seconds until more quota is available (0 when the bucket is full)
Keys expire on their own once they would be back to their initial state.
]]

local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local window = tonumber(ARGV[4])

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'seq')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
local seq = tonumber(state[3]) or 0
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[2])

-- Seconds until one more request fits both rules.
local function wait_for_one()
  local wait = 0
  if tokens < 1 then wait = (1 - tokens) / rate end
  if count >= limit then
    -- the (count - limit + 1)-th oldest entry has to leave the window
    local entry = redis.call('ZRANGE', KEYS[2], count - limit, count - limit, 'WITHSCORES')
    wait = math.max(wait, tonumber(entry[2]) + window - now)
  end
  return wait
end

local allowed = 0
local retry_after = 0
if tokens >= 1 and count < limit then
  allowed = 1
  tokens = tokens - 1
  seq = seq + 1
  redis.call('ZADD', KEYS[2], now, string.format('%.6f:%d', now, seq))
  count = count + 1
else
  retry_after = wait_for_one()
end

local remaining = math.max(0, math.min(math.floor(tokens), limit - count))
local more
if remaining == 0 then
  more = wait_for_one()
elseif tokens >= burst then
  more = 0
else
  more = (1 - (tokens - math.floor(tokens))) / rate
end

if KEYS[3] then
  redis.call('HINCRBY', KEYS[3], 'requests', 1)
  if allowed == 0 then redis.call('HINCRBY', KEYS[3], 'rejected', 1) end
  redis.call('EXPIRE', KEYS[3], 7200)
end

redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now, 'seq', seq)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
redis.call('PEXPIRE', KEYS[2], math.ceil(window * 1000) + 1000)

return {allowed, remaining, tostring(retry_after), tostring(more), tostring(now)}
