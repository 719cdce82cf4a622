--[[
Per-workspace running slots, shared by every worker: at most `limit` jobs of one workspace
run at once. A slot is a lease: a worker that dies without releasing frees it when the lease
runs out (Redis server clock). Each run attempt holds its slot under its own holder id, so a
duplicate delivery can never share or release another attempt's slot.

KEYS[1]  zset  holder -> lease expiry
ARGV     op ('acquire' | 'release' | 'free'), holder, limit, lease_seconds

Returns {ok, free}: acquire → {1, free} when a slot was taken, {0, 0} when all are taken;
release → {1, free} after giving the slot back; free → {1, free}.
]]

local op, holder, limit, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)  -- leases of dead workers

if op == 'release' then
  redis.call('ZREM', KEYS[1], holder)
elseif op == 'acquire' then
  if redis.call('ZCARD', KEYS[1]) >= limit then
    return {0, 0}
  end
  redis.call('ZADD', KEYS[1], now + lease, holder)
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000) + 1000)
end
return {1, limit - redis.call('ZCARD', KEYS[1])}
