"""Delayed publish on Redis: a sorted set beside the stream, and a mover.

Redis streams cannot hold an entry back, so ``RedisPublisher.publish(body, delay=...)``
does not touch the stream: it adds the whole ``XADD`` (its arguments after the key:
trimming, ``*``, the fields) as one member of ``<stream>:scheduled``, scored by when it
is due on the *server's* clock (``SCHEDULE``, which reads ``TIME``). ``MOVE_DUE`` takes
the due members, ``XADD``\\s each to the stream and removes it, in one script: atomic,
so a member is added exactly once however many movers run. What the stream's readers
see is only what the user published, when it is due.

Movers: the publisher that scheduled runs one (every :data:`INTERVAL` seconds while
anything it scheduled waits), and every ``RedisProvider`` of the stream runs one while
started. With neither running, scheduled messages wait in the set (kept, not lost) and
are added late, once one runs again.

A member is a 32-character prefix (nanoseconds then random: unique, and in publish
order among members due at the same millisecond) followed by each argument as
``<length>:<bytes>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

from loafer_redis.errors import scrub

logger = logging.getLogger("loafer_redis")

#: Seconds between two moves while something waits.
INTERVAL = 0.25
#: Most members one move adds.
BATCH = 200

# KEYS: the scheduled set. ARGV: delay ms, member... Scores them TIME + delay.
SCHEDULE = """
local t = redis.call('TIME')
local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], due, ARGV[i])
end
return #ARGV - 1
"""

# KEYS: the scheduled set, the stream. ARGV: most to move. Adds each due member's XADD
# to the stream and removes it; returns {moved, ms until the next is due or -1}.
MOVE_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local args = {}
  local pos = 33
  local n = #member
  while pos <= n do
    local colon = string.find(member, ':', pos, true)
    local len = tonumber(string.sub(member, pos, colon - 1))
    args[#args + 1] = string.sub(member, colon + 1, colon + len)
    pos = colon + len + 1
  end
  redis.call('XADD', KEYS[2], unpack(args))
  redis.call('ZREM', KEYS[1], member)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if first[2] then wait = math.max(0, tonumber(first[2]) - now) end
return {#due, wait}
"""


def key_of(stream: str) -> str:
    """The sorted set of ``stream``'s scheduled messages: ``<stream>:scheduled``."""
    return f"{stream}:scheduled"


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8")


def pack(args: Iterable[Any]) -> bytes:
    """A member holding ``XADD``'s arguments after the key."""
    parts = [f"{time.time_ns():019d}{uuid.uuid4().hex[:13]}".encode()]
    for arg in args:
        data = _bytes(arg)
        parts += (str(len(data)).encode(), b":", data)
    return b"".join(parts)


class Mover:
    """Moves the due scheduled messages of some streams onto them, in a task of its own.

    ``keep_polling``: a provider's mover polls every :data:`INTERVAL` until stopped
    (others schedule too); a publisher's ends once nothing it watches waits (started
    again by :meth:`watch`).
    """

    def __init__(self, client: Any, *, what: str, url: str, keep_polling: bool) -> None:
        self._move = client.register_script(MOVE_DUE)
        self._what = what
        self._url = url
        self._keep_polling = keep_polling
        self._streams: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._stopping = asyncio.Event()

    def watch(self, stream: str) -> None:
        """Move ``stream``'s due scheduled messages from now on (the task started if
        it is not running)."""
        self._streams.add(stream)
        self._stopping.clear()
        self._again = True  # a run about to end on an empty set moves once more
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"loafer:redis:scheduled:{stream}"
            )

    async def move_once(self) -> tuple[int, float | None]:
        """One move on every watched stream: how many were added, and the seconds until
        the next is due (None: none waits)."""
        moved, soonest = 0, None
        for stream in list(self._streams):
            added, wait_ms = await self._move(keys=[key_of(stream), stream], args=[BATCH])
            moved += int(added)
            if int(added) >= BATCH:
                wait_ms = 0
            if int(wait_ms) >= 0:
                wait = int(wait_ms) / 1000
                soonest = wait if soonest is None else min(soonest, wait)
        return moved, soonest

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._again = False
            try:
                async with asyncio.timeout(10):
                    _, soonest = await self.move_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "%s: moving due scheduled messages failed (tried again): %s",
                    self._what,
                    scrub(f"{type(exc).__name__}: {exc}", self._url),
                )
                soonest = INTERVAL
            if soonest is None and not self._keep_polling and not self._again:
                return
            pause = INTERVAL if soonest is None else min(INTERVAL, soonest)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)

    async def stop(self, timeout: float = 5.0) -> None:
        """End the task once its move in progress is done (not cancelled mid-call: the
        connection stays clean), cancelled after ``timeout``. What waits stays in the
        sets, for the next mover."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait({task}, timeout=1.0)
