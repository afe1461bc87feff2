"""A rate limit shared by every process through Redis (extra ``redis``).

::

    from loafer_core.ext.redis_rate import RedisTokenBucket
    from loafer_core.ratelimit import RateLimit

    bucket = RedisTokenBucket("redis://127.0.0.1:6379/0", key="payments-api", rate=50)
    route = Route(provider, handler, middleware=[RateLimit(bucket=bucket)])
    manager = Manager([route])  # starts the bucket's connection, closes it after the drain

Every process (``loafer run --workers N``, several machines) whose bucket names the same
``key`` on the same Redis shares one budget of ``rate`` tokens per ``per`` seconds. The
bucket is the generic cell rate algorithm kept in one Redis key (the theoretical arrival
time of the next token, in microseconds of Redis's own clock, so the machines' clocks do
not matter), updated by one Lua script per token: a caller reserves the next token and
sleeps until it is due, so callers are served in the order they asked and the rate holds
without retries. The key expires by itself once the bucket is idle.

A Redis that does not answer raises :class:`~loafer_core.errors.ProviderError`: the
delivery is RETRIED (the rate limit fails closed: nothing runs unlimited). Refused
credentials raise :class:`~loafer_core.errors.ConfigurationError` at start-up. The URL's
password never appears in an error, a log line or the ``repr``.
"""

from __future__ import annotations

from typing import Any

from loafer_core.ext.redis_store import RedisStore
from loafer_core.ratelimit import check_rate

__all__ = ["RedisTokenBucket"]

# KEYS[1]: the bucket. ARGV: interval (us per token), tolerance (us a token may be taken
# early: (burst - 1) * interval), max_wait (us; -1: none). Returns the wait (us), or -1
# when it would be longer than max_wait (nothing taken).
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - tonumber(ARGV[2]) - now
if wait < 0 then wait = 0 end
local max_wait = tonumber(ARGV[3])
if max_wait >= 0 and wait > max_wait then return -1 end
local new = tat + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.ceil((new - now) / 1000) + 1000)
return wait
"""


class RedisTokenBucket:
    """A :class:`~loafer_core.ratelimit.Bucket` in Redis, shared by every process.

    Arguments:
        url: ``redis://[:password@]host:port/db`` or ``rediss://``.
        key: the bucket's name: every process using the same key shares the rate.
        rate: tokens per ``per`` seconds.
        per: the period of ``rate``, in seconds (1 by default).
        burst: tokens that may be taken at once after a quiet spell (default one
            second's worth).
        prefix: put before the key (``loafer:rate:``).
        client: a ``redis.asyncio.Redis`` to use instead of opening one (not closed).
        timeout: seconds each Redis call may take.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        key: str,
        rate: float,
        per: float = 1.0,
        burst: int | None = None,
        prefix: str = "loafer:rate:",
        client: Any = None,
        timeout: float = 5.0,
    ) -> None:
        self.rate, self.per, self.burst = check_rate("RedisTokenBucket", rate, per, burst)
        self.key = prefix + key
        self._interval_us = round(self.per / self.rate * 1_000_000)
        self._tolerance_us = (self.burst - 1) * self._interval_us
        # the connection, its bounded calls and error mapping, start/close: the store's
        self._store = RedisStore(url, prefix=prefix, client=client, timeout=timeout)
        self._script: Any = None

    def __repr__(self) -> str:
        store = repr(self._store).removeprefix("RedisStore(").removesuffix(")")
        return f"RedisTokenBucket({store}, key={self.key!r}, rate={self.rate:g}/{self.per:g}s)"

    async def reserve(self, max_wait: float | None = None) -> float | None:
        """Take the next token: seconds until it is due; ``None`` (nothing taken) when
        that would be more than ``max_wait``."""
        store = self._store
        if self._script is None:
            self._script = store._redis().register_script(_RESERVE)
        limit = -1 if max_wait is None else round(max_wait * 1_000_000)
        wait = await store._call(
            "rate limit",
            self._script(keys=[self.key], args=[self._interval_us, self._tolerance_us, limit]),
        )
        wait = int(wait)
        return None if wait < 0 else wait / 1_000_000

    async def start(self) -> None:
        """Check Redis answers (see :meth:`RedisStore.start`)."""
        await self._store.start()

    async def close(self) -> None:
        """Close the connection this bucket opened. Idempotent."""
        await self._store.close()
        self._script = None
