-- A rate-limit decision for one subject (see limit.lua, prepended).
-- KEYS: bucket, log, stats (optional); ARGV: rate, burst, limit, window.
return decide(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1]), tonumber(ARGV[2]),
              tonumber(ARGV[3]), tonumber(ARGV[4]))
