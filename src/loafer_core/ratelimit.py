"""Rate limits: at most so many deliveries of a route begin processing per second.

:class:`RateLimit` is a middleware. Each delivery takes a token from a bucket before
its handler runs; when the bucket is empty it waits its turn (the delivery stays
leased meanwhile: the dispatcher keeps extending its lease; a drain waits for it as for
any delivery in flight, at most ``max_wait``). The bucket is either

- :class:`TokenBucket`: in this process (one route, or every route given the same
  bucket), or
- :class:`loafer_core.ext.redis_rate.RedisTokenBucket`: one bucket in Redis shared by
  every process and machine using the same key, so ``loafer run --workers 3`` on three
  machines together holds the rate.

Both are *reserving* token buckets (the generic cell rate algorithm): ``rate`` tokens per
``per`` seconds, at most ``burst`` taken at once after a quiet spell. A caller that finds
no token reserves the next one and sleeps until it is due, so waiting callers are served
in arrival order and the rate holds exactly, with no retry storm. The wait is bounded by
``max_wait``: a delivery that would wait longer is RELEASED (given back to the broker,
counting no attempt) instead of holding a concurrency slot and a lease for minutes.

::

    from loafer_core.ratelimit import RateLimit

    route = Route(provider, handler, middleware=[RateLimit(20)])           # 20 per second
    route = Route(provider, handler, middleware=[RateLimit(600, per=60)])  # 600 per minute

A rate limit holds the handler back, not the fetch: set the route's ``max_concurrency``
no higher than what you want held waiting (a handful above rate times the handler's time).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from loafer_core.errors import ConfigurationError
from loafer_core.outcome import RELEASE, Outcome
from loafer_core.provider import Delivery

if TYPE_CHECKING:
    from loafer_core.context import RouteContext

__all__ = ["Bucket", "RateLimit", "TokenBucket", "check_rate"]


def check_rate(owner: str, rate: Any, per: Any, burst: Any) -> tuple[float, float, int]:
    """``(rate, per, burst)`` checked, or a ConfigurationError naming what is wrong;
    ``burst=None`` is one second's worth of tokens (at least 1)."""
    for label, value in (("rate", rate), ("per", per)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ConfigurationError(f"{owner}({label}=...): expected a number > 0, got {value!r}")
    if burst is None:
        burst = max(1, math.ceil(rate / per))
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ConfigurationError(f"{owner}(burst=...): expected a whole number >= 1, got {burst!r}")
    return float(rate), float(per), burst


@runtime_checkable
class Bucket(Protocol):
    """Where a :class:`RateLimit` takes its tokens.

    ``reserve(max_wait)`` takes the next token and returns how many seconds from now it
    is due (``0`` when one was free); the caller sleeps that long. When the token would
    be due more than ``max_wait`` seconds from now it takes nothing and returns ``None``
    (so callers that give up do not push the rate back for everyone). A bucket with a
    connection (Redis) also has ``start()``/``close()``, which the manager calls.
    """

    async def reserve(self, max_wait: float | None = None) -> float | None: ...


class TokenBucket:
    """A reserving token bucket in this process: ``rate`` tokens per ``per`` seconds.

    ``burst`` tokens may be taken at once after a quiet spell (default: one second's
    worth). Shared by every route given the same object; not thread-safe (one loop).
    """

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.per, self.burst = check_rate("TokenBucket", rate, per, burst)
        self._interval = self.per / self.rate  # seconds per token
        self._tolerance = (self.burst - 1) * self._interval  # how early a token may be taken
        self._clock = clock
        self._next = -math.inf  # the theoretical arrival time of the next token (GCRA)

    async def reserve(self, max_wait: float | None = None) -> float | None:
        """Take the next token: seconds until it is due (0: now); ``None``, taking
        nothing, when that would be more than ``max_wait``."""
        return self.take(max_wait)

    def take(self, max_wait: float | None = None) -> float | None:
        """:meth:`reserve`, synchronously."""
        now = self._clock()
        due = max(self._next, now)  # the theoretical arrival time of this token
        wait = max(0.0, due - self._tolerance - now)
        if max_wait is not None and wait > max_wait:
            return None
        self._next = due + self._interval
        return wait

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}, per={self.per:g}, burst={self.burst})"


class RateLimit:
    """Middleware: at most ``rate`` deliveries per ``per`` seconds reach the handler.

    - ``bucket``: a shared bucket (a :class:`TokenBucket` several routes use, or a
      :class:`~loafer_core.ext.redis_rate.RedisTokenBucket` every process uses); by
      default a bucket of this middleware's own, in this process.
    - ``max_wait``: the longest a delivery waits for its token (seconds); past that it
      is RELEASED (back to the broker, counting no attempt) rather than held. ``None``:
      no bound.
    - ``on_wait``: called with the seconds a delivery is about to wait (metrics).

    Exceptions of the bucket (Redis down) are errors of the message: the route RETRIES
    it (with its retry policy), as for any middleware error.
    """

    def __init__(
        self,
        rate: float | None = None,
        per: float = 1.0,
        *,
        burst: int | None = None,
        bucket: Bucket | None = None,
        max_wait: float | None = 60.0,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        if bucket is None:
            if rate is None:
                raise ConfigurationError("RateLimit: give a rate (per second) or a bucket")
            bucket = TokenBucket(rate, per, burst=burst)
        elif rate is not None:
            raise ConfigurationError("RateLimit: give a rate or a bucket, not both")
        if not isinstance(bucket, Bucket):
            raise ConfigurationError(
                f"RateLimit(bucket=...): expected an object with async reserve(), got "
                f"{type(bucket).__name__}"
            )
        if max_wait is not None and (
            not isinstance(max_wait, int | float) or isinstance(max_wait, bool) or max_wait <= 0
        ):
            raise ConfigurationError(
                f"RateLimit(max_wait=...): expected seconds > 0 or None, got {max_wait!r}"
            )
        self.bucket = bucket
        self.max_wait = max_wait
        self.on_wait = on_wait
        #: what the manager starts and closes (the Redis bucket's connection)
        self.services: tuple[Any, ...] = (bucket,) if hasattr(bucket, "start") else ()

    async def __call__(
        self,
        delivery: Delivery,
        route: RouteContext,
        call_next: Callable[[Delivery], Awaitable[Outcome]],
    ) -> Outcome:
        wait = await self.bucket.reserve(self.max_wait)
        if wait is None:
            return RELEASE
        if wait > 0:
            if self.on_wait is not None:
                self.on_wait(wait)
            await asyncio.sleep(wait)
        return await call_next(delivery)

    def __repr__(self) -> str:
        return f"RateLimit({self.bucket!r}, max_wait={self.max_wait!r})"
