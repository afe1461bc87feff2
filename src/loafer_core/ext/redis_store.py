"""A Redis store for :class:`~loafer_core.idempotency.Idempotency` (extra ``redis``).

::

    from loafer_core.ext.redis_store import RedisStore
    from loafer_core.idempotency import Idempotency

    store = RedisStore("redis://127.0.0.1:6379/0")
    route = Route(provider, handler, middleware=[Idempotency(store, key="order-id")])
    manager = Manager([route])  # starts the store, and closes it after the drain

Shared by every process and worker using the same Redis: a key handled by one is skipped
by all. A claim is ``SET key "pending:<token>" NX PX lock_ttl``, renewed while the handler runs
(``PEXPIRE`` while it still holds the token, a Lua script); completing is
``SET key "done" PX ttl``; releasing deletes the key only while it still holds our token
(a Lua script, atomic). Keys expire by themselves: nothing to clean up.

Needs ``redis>=5`` (``pip install 'loafer-core[redis]'``), imported when the store first
connects. Redis failures raise :class:`~loafer_core.errors.ProviderError` (the message is
retried); refused credentials or ACL permissions raise
:class:`~loafer_core.errors.ConfigurationError` (so :meth:`RedisStore.start`, run by the
manager as a service, stops it at start-up rather than every message being retried and
dead-lettered). The URL's password never appears in them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.idempotency import Claim

__all__ = ["RedisStore"]

logger = logging.getLogger("loafer_core.ext.redis_store")

_DONE = b"done"
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _masked(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # host[:port] as written
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class RedisStore:
    """Idempotency keys in Redis (see the module docstring).

    Arguments:
        url: ``redis://[:password@]host:port/db`` or ``rediss://``.
        prefix: put before every key (``loafer:idem:`` by default).
        client: a ``redis.asyncio.Redis`` to use instead of opening one from ``url`` (it
            is then not closed by :meth:`close`).
        timeout: seconds each Redis call may take.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "loafer:idem:",
        client: Any = None,
        timeout: float = 5.0,
    ) -> None:
        if client is None and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(
                f"RedisStore(url=...): expected a redis://, rediss:// or unix:// URL, got "
                f"{_masked(url)!r}"
            )
        if client is None:
            try:
                urlsplit(url).port  # noqa: B018 - raises ValueError for a bad port
            except ValueError:
                raise ConfigurationError(
                    f"RedisStore(url=...): the port of {_masked(url)!r} is not a number "
                    "from 0 to 65535"
                ) from None
        self._url = url
        self.prefix = prefix
        self.timeout = timeout
        self._client = client
        self._owned = client is None
        self._release: Any = None
        self._extend: Any = None
        self._users = 0  # managers that started it and have not closed it yet
        self._calls = 0  # Redis calls under way
        self._no_calls: asyncio.Event | None = None  # set when _calls drops to 0

    def __repr__(self) -> str:
        return f"RedisStore(url={_masked(self._url)!r}, prefix={self.prefix!r})"

    def _redis(self) -> Any:
        if self._client is None:
            try:
                import redis.asyncio as aioredis
            except ImportError:
                raise ConfigurationError(
                    "RedisStore needs redis-py: pip install 'loafer-core[redis]'"
                ) from None
            self._client = aioredis.Redis.from_url(
                self._url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
        return self._client

    async def _call(self, what: str, call: Any) -> Any:
        self._calls += 1
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if _refused(exc):  # retrying cannot help: every message would fail alike
                raise ConfigurationError(
                    f"Redis at {_masked(self._url)}: {what} refused ({type(exc).__name__}): "
                    "check the credentials (user and password in the URL) and the user's "
                    "ACL permissions"
                ) from None
            raise ProviderError(
                f"Redis at {_masked(self._url)}: {what} failed: {type(exc).__name__}"
            ) from None
        finally:
            self._calls -= 1
            if not self._calls and self._no_calls is not None:
                self._no_calls.set()

    async def claim(self, key: str, token: str, lock_ttl: float) -> Claim:
        """Claim ``key`` (SET NX with ``lock_ttl``), or say it is done or busy."""
        redis = self._redis()
        name = self.prefix + key
        pending = f"pending:{token}".encode()
        for _ in range(3):  # a key expiring between SET NX and GET: claim again
            if await self._call("SET NX", redis.set(name, pending, nx=True, px=_ms(lock_ttl))):
                return Claim.NEW
            value = await self._call("GET", redis.get(name))
            if value is not None:
                return Claim.DONE if value == _DONE else Claim.BUSY
        return Claim.BUSY

    async def complete(self, key: str, token: str, ttl: float) -> None:
        """Mark ``key`` done for ``ttl`` seconds."""
        redis = self._redis()
        await self._call("SET", redis.set(self.prefix + key, _DONE, px=_ms(ttl)))

    async def release(self, key: str, token: str) -> None:
        """Delete ``key`` if it still holds this claim."""
        redis = self._redis()
        if self._release is None:
            self._release = redis.register_script(_RELEASE)
        await self._call(
            "release", self._release(keys=[self.prefix + key], args=[f"pending:{token}"])
        )

    async def extend(self, key: str, token: str, lock_ttl: float) -> bool:
        """Hold ``key`` ``lock_ttl`` seconds more if it still holds this claim."""
        redis = self._redis()
        if self._extend is None:
            self._extend = redis.register_script(_EXTEND)
        held = await self._call(
            "extend",
            self._extend(keys=[self.prefix + key], args=[f"pending:{token}", _ms(lock_ttl)]),
        )
        return bool(held)

    async def start(self) -> None:
        """Check Redis answers (as a manager :class:`~loafer_core.manager.Service`).

        A store may be shared by several managers (routes of two managers in one
        process): each starts it, and it is closed when the last of them closes it.
        Refused credentials or permissions raise ``ConfigurationError`` (the manager does
        not start); a Redis not reachable yet is logged, as a broker not reachable at
        boot is: the messages are RETRIED until it answers."""
        try:
            await self._call("PING", self._redis().ping())
        except ProviderError as exc:
            logger.warning(
                "%r: Redis not reachable at start-up (%s); messages are retried until it answers",
                self,
                exc,
            )
        self._users += 1  # not when start raised: a manager closes only what started

    async def close(self) -> None:
        """Close the connections this store opened (not a ``client=`` given), once the
        calls under way ended (each bounded by ``timeout``). Idempotent.

        Started by several managers, it stays open until the last of them closes it: a
        manager done first must not cut the calls of another's routes (whose client
        would reconnect behind the close and be left open)."""
        if self._users > 1:
            self._users -= 1
            return
        self._users = 0
        if not self._owned:
            return
        if self._calls:
            self._no_calls = asyncio.Event()
            try:
                async with asyncio.timeout(self.timeout):
                    await self._no_calls.wait()
            except TimeoutError:
                pass  # each call is bounded by the same timeout: closed below regardless
            finally:
                self._no_calls = None
        client, self._client = self._client, None
        self._release = self._extend = None
        if client is not None:
            await client.aclose()


_REFUSALS = frozenset({"AuthenticationError", "AuthorizationError", "NoPermissionError"})


def _refused(exc: BaseException) -> bool:
    """Redis refused our credentials or permissions (redis-py's error classes, by name:
    no import of redis here)."""
    return any(
        cls.__name__ in _REFUSALS and cls.__module__.startswith("redis")
        for cls in type(exc).__mro__
    )


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
