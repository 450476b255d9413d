-- graphguard: renew leases, by Redis' clock.
--
-- KEYS[i] is the i-th lease's sorted set; ARGV[2i-1] its id, ARGV[2i] its ttl in microseconds.
-- A lease already past its expiry is not brought back (another replica may have counted its
-- slot free and taken it): it is removed and counted. Returns how many were lost.
if redis.replicate_commands then
  redis.replicate_commands()
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lost = 0
for i, key in ipairs(KEYS) do
  local id, ttl = ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now))
  if redis.call('ZSCORE', key, id) then
    redis.call('ZADD', key, 'XX', string.format('%.0f', now + ttl), id)
    local ms = math.ceil(ttl / 1000)
    if redis.call('PTTL', key) < ms then
      redis.call('PEXPIRE', key, ms)
    end
  else
    lost = lost + 1
  end
end
return lost
