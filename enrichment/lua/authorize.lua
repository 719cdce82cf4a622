-- Authentication and the rate limit in one round trip (see limit.lua, prepended).
--
-- KEYS[1]  the API key's cache entry: hash {digest, limits, workspace (JSON), id, and per
--          kind (submit, read) rate, burst, limit} written after a database lookup; or the
--          string "stale" (a revocation or a change of the workspace: the database decides)
-- KEYS[2]  this minute's counters hash (alerts)
-- KEYS[3]  the key's known-key mark for the failed-authentication throttle (authguard.py)
-- ARGV     the key's digest, kind ("submit" or "read"), limiter key prefix, window, digest
--          of the caller's plan limits, seconds a success keeps the key known
--
-- Returns {0} when the cache cannot answer (no entry, stale, another key with this prefix,
-- an entry written under other plan limits);
-- else — the key authenticated: its known-key mark is renewed, whatever the rate limit
-- decides — {1, workspace JSON, allowed, remaining, retry_after, t, now, limit} for the
-- workspace's limit of that kind. The limiter keys are named from the cached workspace id,
-- so this script needs a single Redis server (not a Cluster).
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
  return {0}
end
local kind = ARGV[2]
local e = redis.call('HMGET', KEYS[1], 'digest', 'workspace', 'id', kind .. ':rate',
                     kind .. ':burst', kind .. ':limit', 'limits')
if e[1] ~= ARGV[1] or e[7] ~= ARGV[5] then
  return {0}
end
redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[6])
local base = ARGV[3] .. ':{' .. e[3] .. '}:' .. kind
-- A test-mode bucket ("<workspace>:test") is not counted for the rejection-rate alert.
local stats = KEYS[2]
if string.sub(e[3], -5) == ':test' then stats = nil end
local d = decide(base, base .. ':log', stats, tonumber(e[4]), tonumber(e[5]),
                 tonumber(e[6]), tonumber(ARGV[4]))
return {1, e[2], d[1], d[2], d[3], d[4], d[5], e[6]}
