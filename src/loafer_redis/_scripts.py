"""The Lua scripts that make each settlement one atomic step on the server.

Every script that settles an entry first checks, with ``XPENDING ... <id> <id> 1
<consumer>``, that the entry is still pending for this consumer: an entry whose lease
lapsed and that another consumer reclaimed is not settled by this one, and a second
settle of the same delivery finds it no longer pending and does nothing.

Nothing but REJECT writes anywhere, and it writes only to the dead-letter stream: the
stream itself belongs to its producers and to every consumer group reading it. A RETRY
or a RELEASE leaves the entry in the group's pending list, handed to the group's
*parked* consumer (``XCLAIM ... JUSTID``, its delivery count set with ``RETRYCOUNT``);
a delayed RETRY also puts its id in the group's sorted set, scored by when it is due.
The reclaim (``RECLAIM``) hands parked entries back out with ``XCLAIM``, which counts
the delivery: the delivery count is the attempt.

Only commands Valkey has too: XPENDING (with IDLE), XRANGE, XADD, XACK, XCLAIM, ZADD,
ZRANGEBYSCORE, ZRANGE, ZSCORE, ZREM, XGROUP DELCONSUMER, TIME; ``cmsgpack`` for the
delayed copies of earlier versions (both bundle it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Scripts"]

_OWNED = """
local function owned(id)
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if p[1] then return tonumber(p[1][4]) end
  return nil
end
"""

_LEGACY = """
-- A member of a delayed set written by an earlier version (a cmsgpack array), not an
-- entry id (digits first).
local function legacy(m)
  local b = string.byte(m, 1)
  return b == nil or b < 48 or b > 57
end
"""

# KEYS: stream, delayed sorted set. ARGV: group, consumer, min idle ms, cursor, count,
# scan budget, parked consumer.
# Claims for this consumer (each claim counts a delivery) up to ``count`` entries: first
# the delayed retries now due (their ids in the sorted set), then, walking the group's
# pending list from ``cursor`` (``XPENDING ... IDLE``), every entry idle ``min idle`` or
# longer: a dead consumer's, or one parked ready by a RETRY or a RELEASE (parked with
# an idle time older than any lease). Delayed retries not yet due are skipped, however
# long idle. The walk wraps round once to the start when it began past it, and looks
# at no more than ``scan budget`` entries per call.
# Returns {next cursor ('0-0': the walk reached the end), {{id, fields, delivery count},
# ...}, ms until the next delayed retry is due or -1}.
RECLAIM = (
    _LEGACY
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local want = tonumber(ARGV[5])
local out = {}
local function claim(id, count, min_idle)
  local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], min_idle, id)
  local e = c[1]
  if e and e[2] then
    out[#out + 1] = {e[1], e[2], count + 1}
  elseif c[1] ~= nil then
    -- claimed but gone from the stream (Redis 6.2 keeps it pending): nothing to deliver
    redis.call('XACK', KEYS[1], ARGV[1], id)
  end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, want)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  if legacy(id) then
    redis.call('XADD', KEYS[1], '*', unpack(cmsgpack.unpack(id), 3))
  else
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    if p[1] then claim(id, tonumber(p[1][4]), 0) end
  end
end
local cursor = ARGV[4]
local wrapped = cursor == '0-0'
local start = '-'
if not wrapped then start = '(' .. cursor end
local budget = tonumber(ARGV[6])
local scanned = 0
while #out < want and scanned < budget do
  local page = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], start, '+', 100)
  for _, p in ipairs(page) do
    scanned = scanned + 1
    cursor = p[1]
    local score = redis.call('ZSCORE', KEYS[2], p[1])
    if not score or tonumber(score) <= now then
      if score then redis.call('ZREM', KEYS[2], p[1]) end
      claim(p[1], tonumber(p[4]), ARGV[3])
      if #out >= want then break end
    end
  end
  if #out >= want then break end
  if #page < 100 then
    cursor = '0-0'
    if wrapped then break end
    wrapped = true
    start = '-'
  else
    start = '(' .. cursor
  end
end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local wait = -1
if nxt[2] then
  wait = math.floor(tonumber(nxt[2]) - now)
  if wait < 0 then wait = 0 end
end
return {cursor, out, wait}
"""
)

# KEYS: stream. ARGV: group, consumer, id... Returns the ids no longer ours.
EXTEND = (
    _OWNED
    + """
local lost = {}
for i = 3, #ARGV do
  if owned(ARGV[i]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""
)

# KEYS: stream. ARGV: group, consumer, parked consumer, increment, id...
# Each entry still ours stays in the group's pending list, handed to the parked
# consumer with an idle time older than any lease (its delivery time set to the epoch):
# the next reclaim of any consumer of the group takes it at once. Its delivery count is
# left as it is for a RETRY (increment 1: the reclaim counts the next delivery) and
# lowered by one for a RELEASE (increment 0: the reclaim's count gives it back). Nothing
# is written to the stream. Returns {parked, not ours, gone}.
REQUEUE = (
    _OWNED
    + """
local t = redis.call('TIME')
local idle = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local parked, lost, gone = 0, 0, 0
local inc = tonumber(ARGV[4])
for i = 5, #ARGV do
  local count = owned(ARGV[i])
  if not count then
    lost = lost + 1
  else
    local n = count - 1 + inc
    if n < 0 then n = 0 end
    local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[i],
      'IDLE', idle, 'RETRYCOUNT', n, 'JUSTID')
    if c[1] then
      parked = parked + 1
    else
      gone = gone + 1  -- deleted from the stream: Redis dropped it from the group too
    end
  end
end
return {parked, lost, gone}
"""
)

# KEYS: stream, delayed sorted set. ARGV: group, consumer, parked consumer, delay ms, id.
# The entry stays in the group's pending list, handed to the parked consumer (its
# delivery count unchanged: the reclaim that takes it when due counts the next
# delivery), and its id waits in the group's sorted set, scored by the server's time
# when it is due. Nothing is written to the stream.
# Returns {1, 0, 0} (delayed), {0, 1, 0} (not ours) or {0, 0, 1} (gone).
RETRY_LATER = (
    _OWNED
    + """
local count = owned(ARGV[5])
if not count then return {0, 1, 0} end
local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[5],
  'RETRYCOUNT', count, 'JUSTID')
if not c[1] then return {0, 0, 1} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[5])
return {1, 0, 0}
"""
)

# KEYS: stream, delayed sorted set. ARGV: most to move. The delayed copies an earlier
# version of loafer_redis left in its sorted set (``<stream>:delayed``; cmsgpack: group,
# id, then the copy's fields): the due ones are added to the stream as that version
# would have (they were acknowledged when they were parked). Members that are entry ids
# (a group of this version naming that key ``delayed_key``) are left alone.
# Returns {moved, ms until the next legacy copy is due or -1 (none left)}.
MOVE_LEGACY_DUE = (
    _LEGACY
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local moved = 0
for _, m in ipairs(due) do
  if legacy(m) then
    redis.call('XADD', KEYS[1], '*', unpack(cmsgpack.unpack(m), 3))
    redis.call('ZREM', KEYS[2], m)
    moved = moved + 1
  end
end
local wait = -1
local nxt = redis.call('ZRANGE', KEYS[2], 0, 99, 'WITHSCORES')
for i = 1, #nxt, 2 do
  if legacy(nxt[i]) then
    wait = math.floor(tonumber(nxt[i + 1]) - now)
    if wait < 0 then wait = 0 end
    break
  end
end
return {moved, wait}
"""
)

# KEYS: stream, dead-letter stream. ARGV: group, consumer, id, maxlen (0: none), n, then
# n field names not copied (loafer's dead-letter fields, written anew, and the group
# field: the dead-letter stream's consumers, whatever their group, must not skip the
# entry), then the fields to add as name, value pairs (the reason, attempts, origin...).
# Returns {1, 0, 0} (dead-lettered), {0, 1, 0} (not ours: nothing done) or {0, 0, 1}
# (the entry is gone from the stream: acknowledged).
REJECT = (
    _OWNED
    + """
if not owned(ARGV[3]) then return {0, 1, 0} end
local e = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
local n = tonumber(ARGV[5])
if e[1] then
  local drop = {}
  for i = 6, 5 + n do drop[ARGV[i]] = true end
  local f = e[1][2]
  local out = {}
  for i = 1, #f, 2 do
    if not drop[f[i]] then
      out[#out + 1] = f[i]
      out[#out + 1] = f[i + 1]
    end
  end
  for i = 6 + n, #ARGV do out[#out + 1] = ARGV[i] end
  if tonumber(ARGV[4]) > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(out))
  else
    redis.call('XADD', KEYS[2], '*', unpack(out))
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if e[1] then return {1, 0, 0} end
return {0, 0, 1}
"""
)

# KEYS: dead-letter stream, origin stream. ARGV: dead entry id, then the fields of the
# replayed entry as name, value pairs. Adds the entry to the origin and deletes the dead
# one in one step (exactly once); returns 0 when the dead entry is gone (nothing done).
REPLAY = """
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if not e[1] then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""


# KEYS: stream. ARGV: group, consumer. Deletes the consumer only if nothing is pending
# for it (XGROUP DELCONSUMER drops its pending entries otherwise). Returns 1 if deleted.
FORGET_CONSUMER = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if p[1] then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class Scripts:
    """The scripts registered on one client (``EVALSHA``, loaded again on ``NOSCRIPT``)."""

    def __init__(self, client: Any) -> None:
        self.reclaim = client.register_script(RECLAIM)
        self.extend = client.register_script(EXTEND)
        self.requeue = client.register_script(REQUEUE)
        self.retry_later = client.register_script(RETRY_LATER)
        self.move_legacy_due = client.register_script(MOVE_LEGACY_DUE)
        self.reject = client.register_script(REJECT)
        self.forget_consumer = client.register_script(FORGET_CONSUMER)
        self.replay = client.register_script(REPLAY)
