-- graphguard: decide every limit of one request at once, by Redis' clock; write only if all
-- pass (and ARGV[1] is '1': '0' only looks).
--
-- KEYS[i] is the i-th check's key. After ARGV[1], four arguments per check:
--   'r', interval, tolerance, cost     a GCRA rate, in whole microseconds (see gcra.rs): the
--                                      key holds the theoretical arrival time
--   'c', limit, ttl, lease id          a concurrency limit: the key is a sorted set of lease
--                                      ids scored by their expiry (microseconds)
-- Returns {spent, then per check: allowed, remaining, reset, retry}: the outcome computed as if
-- spending, with the request's own earlier checks on the same key counted.
--
-- Every number stays an integer below 2^53, so the doubles of Redis' Lua are exact; numbers
-- are written with '%.0f' because tostring() would round them to 14 digits.
if redis.replicate_commands then
  redis.replicate_commands() -- Redis < 5: replicate the writes, not the script (TIME is in it)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pass = true
local out = {0}
local tat = {} -- a rate key's arrival time after this request's earlier checks
local held = {} -- a concurrency key's count after this request's earlier checks
local writes = {}

local function rate(i, key, interval, tolerance, cost)
  local base = tat[key] or tonumber(redis.call('GET', key)) or 0
  if base < now then base = now end
  local after = base + cost
  local limit_at = now + tolerance
  if after <= limit_at then
    tat[key] = after
    writes[i] = after
    return 1, math.floor((limit_at - after) / interval), after - now, 0
  end
  pass = false
  return 0, math.floor((limit_at - base) / interval), base - now, after - limit_at
end

local function slots(key, limit)
  local n = held[key]
  if n == nil then
    -- Leases past their expiry belong to holders that stopped renewing: they are gone.
    redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now))
    n = redis.call('ZCARD', key)
  end
  if n < limit then
    held[key] = n + 1
    return 1, limit - n - 1, 0, 0
  end
  pass = false
  return 0, 0, 0, 0
end

for i, key in ipairs(KEYS) do
  local a = 2 + (i - 1) * 4
  local x, y = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local ok, remaining, reset, retry
  if ARGV[a] == 'r' then
    ok, remaining, reset, retry = rate(i, key, x, y, tonumber(ARGV[a + 3]))
  else
    ok, remaining, reset, retry = slots(key, x)
  end
  out[#out + 1] = ok
  out[#out + 1] = remaining
  out[#out + 1] = reset
  out[#out + 1] = retry
end

if not pass or ARGV[1] ~= '1' then
  return out
end
for i, key in ipairs(KEYS) do
  local a = 2 + (i - 1) * 4
  if ARGV[a] == 'r' then
    -- Once the arrival time has passed, the key is the same as no key: let it go then.
    local ms = math.ceil((writes[i] - now) / 1000)
    redis.call('SET', key, string.format('%.0f', writes[i]), 'PX', math.max(ms, 1))
  else
    local ttl = tonumber(ARGV[a + 2])
    redis.call('ZADD', key, string.format('%.0f', now + ttl), ARGV[a + 3])
    local ms = math.ceil(ttl / 1000)
    if redis.call('PTTL', key) < ms then
      redis.call('PEXPIRE', key, ms)
    end
  end
end
out[1] = 1
return out
