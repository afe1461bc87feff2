"""The Lua scripts that make each settlement one atomic step on the server.

Every script that settles an entry first checks, with ``XPENDING ... <id> <id> 1
<consumer>``, that the entry is still pending for this consumer: an entry whose lease
lapsed and that another consumer reclaimed is not settled by this one, and a second
settle of the same delivery finds it no longer pending and does nothing (no second
copy). Copies (RETRY, REJECT, a due delayed RETRY) are written in the same script that
acknowledges the original, so a process dying in between leaves either the original
pending (reclaimed later) or the copy, never neither.

Only commands Valkey has too: XPENDING, XRANGE, XADD, XACK, XCLAIM, XAUTOCLAIM,
ZADD, ZRANGEBYSCORE, ZRANGE, ZREM, XGROUP DELCONSUMER, TIME; ``cmsgpack`` for the
delayed copies (both bundle it).
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

_COPY = """
local function copy(id, drop1, drop2, drop3, drop4)
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if not e[1] then return nil end
  local f = e[1][2]
  local out = {}
  for i = 1, #f, 2 do
    local name = f[i]
    if name ~= drop1 and name ~= drop2 and name ~= drop3 and name ~= drop4 then
      out[#out + 1] = name
      out[#out + 1] = f[i + 1]
    end
  end
  return out
end
"""

# KEYS: stream. ARGV: group, consumer, min idle ms, cursor, count.
# Returns {next cursor, {{id, fields, delivery count}, ...}}.
RECLAIM = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {}
for _, e in ipairs(r[2]) do
  if e and e[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
    local n = 1
    if p[1] then n = p[1][4] end
    out[#out + 1] = {e[1], e[2], n}
  end
end
return {r[1], out}
"""

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

_REQUEUED = """
-- The entry's fields for a copy: its attempt field set to the attempt of its delivery
-- (the field, 1 if absent, plus its delivery count less one) plus ``inc``, and the group
-- field set to this group. nil if the entry is gone from the stream.
local function requeued(id, count, inc)
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if not e[1] then return nil end
  local f = e[1][2]
  local out = {}
  local base = 1
  for i = 1, #f, 2 do
    local name = f[i]
    if name == ARGV[3] then
      base = tonumber(f[i + 1]) or 1
    elseif name ~= ARGV[4] then
      out[#out + 1] = name
      out[#out + 1] = f[i + 1]
    end
  end
  if base < 1 then base = 1 end
  out[#out + 1] = ARGV[3]
  out[#out + 1] = string.format('%d', base + count - 1 + inc)
  out[#out + 1] = ARGV[4]
  out[#out + 1] = ARGV[1]
  return out
end
"""

# KEYS: stream. ARGV: group, consumer, attempt field, group field, increment, id...
# Each entry still ours is added again at the stream's end (attempt + increment: 1 for
# a RETRY, 0 for a RELEASE) and acknowledged. Returns {re-added, not ours, gone}.
REQUEUE = (
    _OWNED
    + _REQUEUED
    + """
local added, lost, gone = 0, 0, 0
local inc = tonumber(ARGV[5])
for i = 6, #ARGV do
  local count = owned(ARGV[i])
  if not count then
    lost = lost + 1
  else
    local out = requeued(ARGV[i], count, inc)
    if out then
      redis.call('XADD', KEYS[1], '*', unpack(out))
      added = added + 1
    else
      gone = gone + 1
    end
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  end
end
return {added, lost, gone}
"""
)

# KEYS: stream, delayed sorted set. ARGV: group, consumer, attempt field, group field,
# delay ms, id. The copy (attempt + 1) waits in the sorted set, scored by the server's
# time when it is due; the original is acknowledged in the same step.
# Returns {1, 0, 0} (delayed), {0, 1, 0} (not ours) or {0, 0, 1} (gone: acknowledged).
RETRY_LATER = (
    _OWNED
    + _REQUEUED
    + """
local count = owned(ARGV[6])
if not count then return {0, 1, 0} end
local out = requeued(ARGV[6], count, 1)
if out then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  table.insert(out, 1, ARGV[6])
  table.insert(out, 1, ARGV[1])
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), cmsgpack.pack(out))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[6])
if out then return {1, 0, 0} end
return {0, 0, 1}
"""
)

# KEYS: stream, delayed sorted set. ARGV: most to move. Moves the due copies back onto
# the stream. Returns {moved, ms until the next is due or -1}.
MOVE_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  local out = cmsgpack.unpack(m)
  redis.call('XADD', KEYS[1], '*', unpack(out, 3))
  redis.call('ZREM', KEYS[2], m)
end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local wait = -1
if nxt[2] then
  wait = math.floor(tonumber(nxt[2]) - now)
  if wait < 0 then wait = 0 end
end
return {#due, wait}
"""

# KEYS: stream, dead-letter stream. ARGV: group, consumer, id, reason, maxlen (0: none),
# reason field, from field, id field, group field (not copied: the dead-letter stream's
# consumers, whatever their group, must not skip the entry).
# Returns {1, 0, 0} (dead-lettered), {0, 1, 0} (not ours: nothing done) or {0, 0, 1}
# (the entry is gone from the stream: acknowledged).
REJECT = (
    _OWNED
    + _COPY
    + """
if not owned(ARGV[3]) then return {0, 1, 0} end
local out = copy(ARGV[3], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
if out then
  out[#out + 1] = ARGV[6]
  out[#out + 1] = ARGV[4]
  out[#out + 1] = ARGV[7]
  out[#out + 1] = KEYS[1]
  out[#out + 1] = ARGV[8]
  out[#out + 1] = ARGV[3]
  if tonumber(ARGV[5]) > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(out))
  else
    redis.call('XADD', KEYS[2], '*', unpack(out))
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if out then return {1, 0, 0} end
return {0, 0, 1}
"""
)

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
        self.move_due = client.register_script(MOVE_DUE)
        self.reject = client.register_script(REJECT)
        self.forget_consumer = client.register_script(FORGET_CONSUMER)
