"""Translating redis-py's exceptions at the plugin's edge, with the URL's password masked.

Everything that leaves this package is a :class:`~loafer_core.errors.ProviderError`
(transient: the dispatcher retries with backoff) or a
:class:`~loafer_core.errors.ConfigurationError` (fix the set-up).
"""

from __future__ import annotations

import redis.exceptions

from loafer_core import kit
from loafer_core.errors import ConfigurationError, LoaferError, ProviderError, PublishRefused

__all__ = [
    "LOGGERS",
    "REFUSALS",
    "URL_RULES",
    "check_url",
    "is_no_group",
    "mask_url",
    "operation_error",
    "protect",
    "publish_error",
    "scrub",
    "secrets_of",
]

#: Redis URLs (redis-py's schemes): a lone ``secret@`` is a password, every query value
#: is masked (``?password=...`` is read by redis-py).
URL_RULES = kit.UrlRules(
    schemes=("redis", "rediss", "unix"),
    lone_user_is_secret=True,
    mask_query=True,
    secret_query=r"pass|secret|token|credential|auth",
    refuse_fragment=True,
)
#: Loggers whose records are filtered (and their children).
LOGGERS = ("redis", "loafer_redis")


def mask_url(url: str) -> str:
    """``url`` with its password and every query value replaced by ``******``."""
    return kit.mask_url(url, URL_RULES)


def secrets_of(url: str) -> tuple[str, ...]:
    """The URL's password (as written and percent-decoded; a lone user info is a
    password for Redis: ``redis://secret@host``) and secret-looking query values."""
    return kit.secrets_of(url, URL_RULES)


def scrub(text: str, url: str | tuple[str, ...]) -> str:
    """``text`` with every Redis URL in it masked and ``url``'s secrets replaced."""
    return kit.scrub(text, URL_RULES, url if isinstance(url, tuple) else secrets_of(url))


def check_url(owner: str, url: object) -> str:
    """Refuse, at construction, a URL redis-py would not read as meant; the message
    never shows the password."""
    return kit.check_url(owner, url, URL_RULES)


def protect(url: str) -> None:
    """Mask ``url``'s secrets, and every Redis URL's password, in the records of
    redis-py's loggers and this plugin's. Idempotent."""
    kit.protect(LOGGERS, secrets_of(url), urls=URL_RULES)


def _describe(exc: BaseException, url: str) -> str:
    detail = scrub(str(exc), url) or type(exc).__name__
    return f"{type(exc).__name__}: {detail}"


def is_no_group(exc: BaseException) -> bool:
    """True for Redis's NOGROUP error (the stream or its consumer group is gone)."""
    return isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith("NOGROUP")


def _refused(exc: BaseException) -> BaseException | None:
    """The refused login or permission in ``exc``'s chain, if any (redis-py 5.0's
    blocking pool reports a failed login as "No connection available", caused by it)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError
        ) or (
            isinstance(current, redis.exceptions.ResponseError)
            and str(current).startswith(("WRONGPASS", "NOAUTH", "NOPERM"))
        ):
            return current
        current = current.__cause__ or current.__context__
    return None


def operation_error(what: str, exc: BaseException, url: str) -> LoaferError:
    """Translate a failed Redis call: refused credentials and unknown commands are
    ConfigurationError (retrying cannot help), anything else ProviderError."""
    where = f"Redis at {mask_url(url)}"
    if isinstance(exc, LoaferError):
        return exc
    refused = _refused(exc)
    if refused is not None:
        exc = refused
        return ConfigurationError(
            f"{where} refused {what} ({_describe(exc, url)}); check the user name and "
            "password in the URL and the user's ACL permissions"
        )
    if isinstance(exc, redis.exceptions.ResponseError) and "unknown command" in str(exc).lower():
        return ConfigurationError(
            f"{where}: {what} failed ({_describe(exc, url)}); loafer_redis needs "
            "Redis 6.2 or later (or Valkey)"
        )
    if isinstance(exc, redis.exceptions.TimeoutError | TimeoutError):
        return ProviderError(f"{where}: {what} timed out")
    return ProviderError(f"{where}: {what} failed ({_describe(exc, url)})")


#: Replies by which Redis refuses an XADD itself (the key holds another type; memory
#: full under ``maxmemory`` with a ``noeviction`` policy).
REFUSALS = ("WRONGTYPE", "OOM")


def publish_error(what: str, exc: BaseException, url: str) -> LoaferError:
    """:func:`operation_error` for a publish: an XADD Redis refuses (:data:`REFUSALS`)
    is :class:`~loafer_core.errors.PublishRefused`, as every publisher says a refusal."""
    text = str(exc)
    if isinstance(exc, redis.exceptions.ResponseError) and any(
        # a pipeline's error is prefixed ("Command # 1 (XADD ...) of pipeline caused
        # error: WRONGTYPE ...")
        text.startswith(code) or f"error: {code}" in text
        for code in REFUSALS
    ):
        return PublishRefused(f"Redis at {mask_url(url)} refused {what} ({_describe(exc, url)})")
    return operation_error(what, exc, url)
