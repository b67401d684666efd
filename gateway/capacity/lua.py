"""Lua scripts of the Redis tracker: each decision is one atomic script on the Redis clock.

Times are integer milliseconds from ``redis.call('TIME')``, so replicas with skewed clocks agree.
Key layout (``P`` is the key prefix, default ``corlens:gw:``):

- ``P lease:<session>``  ZSET lease id -> expiry ms. Occupancy is the count of live members:
  there is no counter a lost decrement could leak.
- ``P rr:<model>``       round-robin pointer (position in the pool of the next session to try).
- ``P line:<model>``     ZSET seq -> seq: the model's line of waiting requests, FIFO by ``seq``
  (from ``P seq``, one INCR per request that had to wait).
- ``P lexp:<model>``     ZSET seq -> expiry ms: a ticket not refreshed (its replica died) leaves.
- ``P queued:<model>``   SET of the seqs past their wait window (bounded by queue_max_depth).
- ``P lx:<model>``       HASH seq -> excluded session keys, newline-joined (only when any).
- ``P cooldown``         HASH session -> cooldown end ms; ``P fails`` HASH session -> failures
  in a row; ``P drained`` SET of drained sessions.
- channel ``P free``     ``s:<session>`` when a slot frees while a request waits in a line of
  a model the session serves (nobody else listens for it), ``m:<model>`` when a ticket leaves.
"""

from __future__ import annotations

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function drop_ticket(line, lexp, queued, lx, seq)
  redis.call('ZREM', lexp, seq)
  redis.call('SREM', queued, seq)
  redis.call('HDEL', lx, seq)
  return redis.call('ZREM', line, seq)
end
local function purge_line(line, lexp, queued, lx, now)
  for _, seq in ipairs(redis.call('ZRANGEBYSCORE', lexp, '-inf', now)) do
    drop_ticket(line, lexp, queued, lx, seq)
  end
end
"""

# KEYS: rr, cooldown, drained, line, lexp, queued, lx, seq, lease zset per pool session
# ARGV: lease id, lease ttl ms, ticket ttl ms, seq ('' = new arrival), queued '0'/'1',
#       excludes (newline-joined), then per session: key, limit, excluded '0'/'1'
# Returns {1, pool index (1-based), purged} | {0, seq, purged, hint ms or -1, excluded-only}
#       | {-1, ms until a cooldown ends or -1, purged}
ACQUIRE = _PRELUDE + """
local now = now_ms()
local n = #KEYS - 8
local seq = ARGV[4]
purge_line(KEYS[4], KEYS[5], KEYS[6], KEYS[7], now)
local keys, limit, excl, used, elig = {}, {}, {}, {}, {}
for i = 1, n do
  keys[i] = ARGV[6 + 3 * i - 2]
  limit[i] = tonumber(ARGV[6 + 3 * i - 1])
  excl[i] = ARGV[6 + 3 * i] == '1'
end
local cds = redis.call('HMGET', KEYS[2], unpack(keys))
local drs = redis.call('SMISMEMBER', KEYS[3], unpack(keys))
local purged, free_total, usable, hint, cool = 0, 0, false, nil, nil
local free = {}
for i = 1, n do
  local lk = KEYS[8 + i]
  purged = purged + redis.call('ZREMRANGEBYSCORE', lk, '-inf', now)
  used[i] = redis.call('ZCARD', lk)
  local cd = tonumber(cds[i]) or 0
  elig[i] = limit[i] > 0 and drs[i] == 0 and cd <= now
  if cd > now then
    hint = math.min(hint or cd, cd)
    if not excl[i] then cool = math.min(cool or cd, cd) end
  end
  if elig[i] then
    if not excl[i] then usable = true end
    if used[i] < limit[i] then
      free[keys[i]] = true
      free_total = free_total + limit[i] - used[i]
    else
      local first = redis.call('ZRANGE', lk, 0, 0, 'WITHSCORES')
      if first[2] then hint = math.min(hint or tonumber(first[2]), tonumber(first[2])) end
    end
  end
end
if not usable then
  return {-1, cool and (cool - now) or -1, purged}
end
local rank
if seq == '' then
  rank = redis.call('ZCARD', KEYS[4])
else
  redis.call('ZADD', KEYS[4], seq, seq)
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[3]), seq)
  if ARGV[5] == '1' then redis.call('SADD', KEYS[6], seq) end
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[7], seq, ARGV[6]) end
  rank = redis.call('ZRANK', KEYS[4], seq)
end
if free_total > 0 and rank >= free_total then
  local lx = redis.call('HGETALL', KEYS[7])
  for j = 1, #lx, 2 do
    if seq == '' or tonumber(lx[j]) < tonumber(seq) then
      local ex, covers = {}, true
      for k in string.gmatch(lx[j + 1], '[^\\n]+') do ex[k] = true end
      for k, _ in pairs(free) do
        if not ex[k] then covers = false break end
      end
      if covers then rank = rank - 1 end
    end
  end
end
local turn = free_total > 0 and rank < free_total
if turn then
  local ptr = tonumber(redis.call('GET', KEYS[1]) or '0') % n
  for step = 0, n - 1 do
    local i = (ptr + step) % n + 1
    if elig[i] and not excl[i] and used[i] < limit[i] then
      redis.call('ZADD', KEYS[8 + i], now + tonumber(ARGV[2]), ARGV[1])
      redis.call('SET', KEYS[1], i % n)
      if seq ~= '' then drop_ticket(KEYS[4], KEYS[5], KEYS[6], KEYS[7], seq) end
      return {1, i, purged}
    end
  end
end
if seq == '' then
  seq = redis.call('INCR', KEYS[8])
  redis.call('ZADD', KEYS[4], seq, seq)
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[3]), seq)
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[7], seq, ARGV[6]) end
end
return {0, tonumber(seq), purged, hint and (hint - now) or -1, turn and 1 or 0}
"""

# KEYS: line, lexp, queued, lx.  ARGV: seq, max depth, ticket ttl ms, channel, message
# Returns 1 (queued) or 0 (queue full: the ticket leaves the line).
PROMOTE = _PRELUDE + """
local now = now_ms()
purge_line(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now)
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0
    and redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[2]) then
  if drop_ticket(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]) > 0 then
    redis.call('PUBLISH', ARGV[4], ARGV[5])
  end
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# KEYS: line, lexp, queued, lx.  ARGV: seq, channel, message.  Returns tickets removed.
LEAVE = _PRELUDE + """
local removed = drop_ticket(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
if removed > 0 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return removed
"""

# KEYS: lexp.  ARGV: ticket ttl ms, seqs...  Refreshes this replica's live tickets.
HEARTBEAT = _PRELUDE + """
local exp = now_ms() + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', exp, ARGV[i]) end
return #ARGV - 1
"""

# KEYS: n lease zsets, then the lines of the models their sessions serve.
# ARGV: lease id, channel, n, then one message per lease zset.  Idempotent.
# A freed slot is announced only when one of those lines holds a ticket (always when no line is
# given): a waiter joins its line in the same atomic step in which it finds no free slot, so
# none can miss the announcement.
RELEASE = """
local n = tonumber(ARGV[3])
local waiting = #KEYS == n
for i = n + 1, #KEYS do
  if redis.call('ZCARD', KEYS[i]) > 0 then
    waiting = true
    break
  end
end
local removed = 0
for i = 1, n do
  if redis.call('ZREM', KEYS[i], ARGV[1]) > 0 then
    removed = removed + 1
    if waiting then redis.call('PUBLISH', ARGV[2], ARGV[3 + i]) end
  end
end
return removed
"""

# KEYS: lease zset.  ARGV: lease id, ttl ms, channel, message.
# Returns 1 (renewed), 0 (no such lease), -1 (it had expired: removed now).
RENEW = _PRELUDE + """
local now = now_ms()
local exp = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not exp then return 0 end
if tonumber(exp) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return -1
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# KEYS: fails, cooldown.  ARGV: session, ok '0'/'1', threshold, cooldown ms.
# Returns the failures in a row; a cooldown starts at the threshold unless one is running.
REPORT = _PRELUDE + """
if ARGV[2] == '1' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
local now = now_ms()
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local cd = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if n >= tonumber(ARGV[3]) and cd <= now then
  redis.call('HSET', KEYS[2], ARGV[1], now + tonumber(ARGV[4]))
end
return n
"""

# KEYS: cooldown, fails, drained, lease zset per session, then line, lexp, queued per model.
# ARGV: n sessions, m models, session keys.  Read only.
# Returns {now ms, per session: live, cooldown ms, fails, drained, per model: queued, waiting}.
SNAPSHOT = _PRELUDE + """
local now = now_ms()
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {now}
for i = 1, n do
  out[#out + 1] = redis.call('ZCOUNT', KEYS[3 + i], '(' .. now, '+inf')
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[1], ARGV[2 + i]) or '0')
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[2], ARGV[2 + i]) or '0')
  out[#out + 1] = redis.call('SISMEMBER', KEYS[3], ARGV[2 + i])
end
for j = 1, m do
  local base = 3 + n + 3 * (j - 1)
  local live = redis.call('ZCOUNT', KEYS[base + 2], '(' .. now, '+inf')
  local queued = 0
  for _, seq in ipairs(redis.call('SMEMBERS', KEYS[base + 3])) do
    local exp = redis.call('ZSCORE', KEYS[base + 2], seq)
    if exp and tonumber(exp) > now then queued = queued + 1 end
  end
  out[#out + 1] = queued
  out[#out + 1] = live - queued
end
return out
"""
