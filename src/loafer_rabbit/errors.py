"""Helpers shared by the RabbitMQ provider and publisher: URL masking, error translation.

The masking is :mod:`loafer_core.kit`'s, with this plugin's table (:data:`URL_RULES`):
the password and every query value of an AMQP URL are masked (aio-pika passes the query
through, and aio-pika and aiormq log it: ``keyfile_password=...``), the values of
secret-looking query parameters are secrets wherever they appear.

aio-pika's and aiormq's exceptions stay inside this package: everything that leaves it is
a :class:`~loafer_core.errors.ProviderError` (transient) or a
:class:`~loafer_core.errors.ConfigurationError` (fix the set-up), with the URL's password
masked.
"""

from __future__ import annotations

import asyncio

import aiormq.exceptions
from yarl import URL

from loafer_core import kit
from loafer_core.errors import ConfigurationError, LoaferError, ProviderError
from loafer_core.kit import MASK

__all__ = [
    "LOGGERS",
    "MASK",
    "URL_RULES",
    "check_url",
    "connect_error",
    "mask_url",
    "operation_error",
    "protect",
    "scrub",
    "secrets_of",
    "vhost_of",
]


def _parse(url: str) -> object:
    return URL(url).port  # what aio-pika parses the URL with


#: AMQP 0-9-1 URLs: what is secret in them (see :class:`loafer_core.kit.UrlRules`).
URL_RULES = kit.UrlRules(
    schemes=("amqp", "amqps"),
    mask_query=True,
    secret_query=r"pass|secret|token|credential|auth",
    refuse_fragment=True,
    validate=_parse,
)
#: Loggers whose records are filtered (and their children); aiormq's marshall logger is
#: created only when it first logs: created up front.
LOGGERS = ("aio_pika", "aiormq", "aiormq.connection.marshall", "pamqp", "loafer_rabbit")


def mask_url(url: str | URL) -> str:
    """``url`` with its password and every query value replaced by ``******`` (safe for
    logs, reprs and errors, whatever characters the password holds)."""
    return kit.mask_url(url, URL_RULES)


def secrets_of(url: str | URL) -> tuple[str, ...]:
    """The URL's password (as written and percent-decoded) and the values of its query
    parameters whose names look secret (``keyfile_password=...``), longest first."""
    return kit.secrets_of(url, URL_RULES)


def scrub(text: str, url: str | URL | tuple[str, ...]) -> str:
    """``text`` with every AMQP URL in it masked, and ``url``'s secrets (or the given
    secrets) replaced by ``******``."""
    return kit.scrub(text, URL_RULES, url if isinstance(url, tuple) else secrets_of(url))


def check_url(owner: str, url: object) -> str:
    """Refuse, at construction, a URL that is not ``amqp[s]://`` or that would be parsed
    other than it was meant; the message says what to fix and never shows the password."""
    return kit.check_url(owner, url, URL_RULES)


def protect(url: str) -> None:
    """Mask ``url``'s secrets, and every AMQP URL's password and query values, in the
    records of aio-pika's, aiormq's, pamqp's and this plugin's loggers. Idempotent."""
    kit.protect(LOGGERS, secrets_of(url), urls=URL_RULES)


def vhost_of(url: str | URL) -> str:
    """The virtual host an AMQP URL names (``/`` when the path is empty)."""
    try:
        path = URL(url).path
    except (TypeError, ValueError):
        return "/"
    if not path or path == "/":
        return "/"
    return path[1:]


def _describe(exc: BaseException, url: str | URL) -> str:
    detail = scrub(str(exc), url) or type(exc).__name__
    return f"{type(exc).__name__}: {detail}"


def connect_error(exc: BaseException, url: str | URL) -> LoaferError:
    """Translate a failure to connect into ConfigurationError (wrong set-up) or ProviderError."""
    where = f"RabbitMQ at {mask_url(url)}"
    if isinstance(exc, LoaferError):
        return exc
    if isinstance(
        exc, aiormq.exceptions.AuthenticationError | aiormq.exceptions.ProbableAuthenticationError
    ):
        return ConfigurationError(
            f"{where} refused the login ({_describe(exc, url)}); check the user name and "
            "password in the URL (RabbitMQ's guest user only works from localhost)"
        )
    if isinstance(
        exc,
        aiormq.exceptions.ConnectionNotAllowed
        | aiormq.exceptions.InvalidFrameError
        | aiormq.exceptions.ChannelAccessRefused,
    ):
        return ConfigurationError(
            f"{where} refused the connection to vhost {vhost_of(url)!r} "
            f"({_describe(exc, url)}); check that the vhost exists and the user may use it"
        )
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return ProviderError(f"{where}: timed out connecting")
    return ProviderError(f"{where}: cannot connect ({_describe(exc, url)})")


def operation_error(what: str, exc: BaseException, url: str | URL) -> LoaferError:
    """Translate a failed broker operation into ProviderError (or pass loafer errors on)."""
    if isinstance(exc, LoaferError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return ProviderError(f"RabbitMQ at {mask_url(url)}: {what} timed out")
    return ProviderError(f"RabbitMQ at {mask_url(url)}: {what} failed ({_describe(exc, url)})")
