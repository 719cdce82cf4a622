--[[
Per-workspace API rate limit: one atomic decision per request.

Two rules, both on the Redis server's clock (TIME), so clients with skewed clocks cannot
over-admit:
  1. a token bucket refilling at `rate` tokens/s with capacity `burst`;
  2. never more than `limit` admitted requests in any `window` seconds.
In any window of W seconds a bucket admits at most burst + rate*W. Where that is within
`limit` (burst = RPM - 60*RPS: pro, elite, their read budgets) the bucket alone keeps rule 2
exactly and nothing more is stored. Where it is not (burst = ceil(RPS) > RPM - 60*RPS: core
can admit 1 + 30 > 30 a minute) a sliding log of admit times makes rule 2 exact.

decide(bucket, log, stats, rate, burst, limit, window):
  bucket  hash  {tokens, ts, seq}
  log     zset  member -> admit time (only where needed)
  stats   hash  (or nil) this minute's counters: requests, rejected (for alerts)
Returns {allowed (0/1), remaining, retry_after, t, now}; the last three as strings (floats).
  remaining    requests that could be admitted right after this one
  retry_after  seconds until a denied request could be admitted
  t            seconds until more quota is available (0 when the bucket is full)
Keys expire on their own once they would be back to their initial state.

This file defines `decide`; rate_limit.lua and authorize.lua call it (the Python side
joins the sources).
]]

local function decide(bucket, log, stats, rate, burst, limit, window)
  local logged = burst + rate * window > limit

  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

  local state = redis.call('HMGET', bucket, 'tokens', 'ts', 'seq')
  local tokens = tonumber(state[1]) or burst
  local ts = tonumber(state[2]) or now
  local seq = tonumber(state[3]) or 0
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)

  local count = 0
  if logged then
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
    count = redis.call('ZCARD', log)
  end

  -- Seconds until one more request fits both rules.
  local function wait_for_one()
    local wait = 0
    if tokens < 1 then wait = (1 - tokens) / rate end
    if count >= limit then
      -- the (count - limit + 1)-th oldest entry has to leave the window
      local entry = redis.call('ZRANGE', log, count - limit, count - limit, 'WITHSCORES')
      wait = math.max(wait, tonumber(entry[2]) + window - now)
    end
    return wait
  end

  local allowed = 0
  local retry_after = 0
  if tokens >= 1 and count < limit then
    allowed = 1
    tokens = tokens - 1
    if logged then
      seq = seq + 1
      redis.call('ZADD', log, now, string.format('%.6f:%d', now, seq))
      redis.call('PEXPIRE', log, math.ceil(window * 1000) + 1000)
      count = count + 1
    end
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

  if stats then
    redis.call('HINCRBY', stats, 'requests', 1)
    if allowed == 0 then redis.call('HINCRBY', stats, 'rejected', 1) end
    redis.call('EXPIRE', stats, 7200)
  end

  redis.call('HSET', bucket, 'tokens', tokens, 'ts', now, 'seq', seq)
  redis.call('PEXPIRE', bucket, math.ceil((burst - tokens) / rate * 1000) + 1000)

  return {allowed, remaining, tostring(retry_after), tostring(more), tostring(now)}
end
