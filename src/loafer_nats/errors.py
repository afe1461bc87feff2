"""Errors of the NATS plugin, and the translation of nats-py's exceptions at its edge.

nats-py's exceptions stay inside this package: what leaves it is a
:class:`~loafer_core.errors.ProviderError` (transient: retried with backoff), a
:class:`~loafer_core.errors.ConfigurationError` (fix the set-up), or a
:class:`MessageTooLarge`, never with a password or token in its text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import nats.errors
import nats.js.errors

from loafer_core import kit
from loafer_core.errors import ConfigurationError, LoaferError, ProviderError, PublishRefused

__all__ = [
    "LOGGERS",
    "SECRET_OPTIONS",
    "URL_RULES",
    "MessageTooLarge",
    "PublishRejected",
    "check_url",
    "connect_error",
    "describe",
    "mask_url",
    "operation_error",
    "protect",
    "scrub",
    "secrets_of",
]

#: ``nats.connect`` keyword arguments whose values are secrets.
SECRET_OPTIONS = ("password", "token", "nkeys_seed_str")


def _parse(url: str) -> object:
    parsed = urlsplit(url)
    if not parsed.hostname:
        raise ValueError("no host")
    return parsed.port


#: NATS URLs: ``user:password@`` or a bare ``token@`` before the host; a server list is
#: comma-separated; the query is not secret.
URL_RULES = kit.UrlRules(
    schemes=("nats", "tls", "ws", "wss"),
    lone_user_is_secret=True,
    secret_options=SECRET_OPTIONS,
    separators=",",
    validate=_parse,
)
#: Loggers whose records are filtered (and their children): nats-py logs its errors
#: with ``exc_info``, and some of its exceptions quote the server URL.
LOGGERS = ("nats", "nats.aio.client", "loafer_nats")


def mask_url(url: str) -> str:
    """``url`` with its password (or token) replaced by ``******``: safe for logs, reprs
    and errors, whatever characters the secret holds. The user name stays."""
    return kit.mask_url(url, URL_RULES)


def secrets_of(url: str, options: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The URL's password or token (as written and percent-decoded), and the string values
    of the secret connection options (``password``, ``token``, ...), longest first."""
    return kit.secrets_of(url, URL_RULES, options)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every NATS URL in it masked and each of ``secrets`` replaced."""
    return kit.scrub(text, URL_RULES, secrets)


def check_url(owner: str, url: object) -> str:
    """Refuse, at construction, what is not a ``nats://`` (``tls://``, ``ws[s]://``) URL
    or would be parsed other than meant; the message never shows the secret."""
    return kit.check_url(owner, url, URL_RULES)


def protect(secrets: Iterable[str]) -> None:
    """Mask ``secrets``, and every NATS URL's password or token, in the records of
    nats-py's loggers and ours. Idempotent."""
    kit.protect(LOGGERS, secrets, urls=URL_RULES)


class MessageTooLarge(LoaferError, ValueError):
    """A message (body and headers) larger than the server's ``max_payload``: refused
    before it is sent (the server would close the connection on it)."""


class PublishRejected(PublishRefused):
    """JetStream answered a publish with an error (or no stream captures the subject).

    A :class:`~loafer_core.errors.PublishRefused`; this name is kept for code that
    catches it."""


def describe(exc: BaseException, secrets: Iterable[str]) -> str:
    """``"TypeName: text"`` of ``exc`` with the secrets masked."""
    detail = scrub(str(exc), tuple(secrets)) or type(exc).__name__
    return f"{type(exc).__name__}: {detail}"


def connect_error(exc: BaseException, url: str, secrets: Iterable[str]) -> LoaferError:
    """A failure to connect: ConfigurationError (refused credentials, TLS set-up) or
    ProviderError (not reachable, timed out)."""
    if isinstance(exc, LoaferError):
        return exc
    where = f"NATS at {mask_url(url)}"
    if isinstance(exc, nats.errors.AuthorizationError | nats.errors.InvalidUserCredentialsError):
        return ConfigurationError(
            f"{where} refused the login ({describe(exc, secrets)}); check the user and "
            "password or token (in the URL or connection_options)"
        )
    if isinstance(exc, nats.errors.SecureConnRequiredError | nats.errors.SecureConnWantedError):
        return ConfigurationError(
            f"{where}: TLS mismatch ({describe(exc, secrets)}); use a tls:// URL and a "
            "tls context when the server requires TLS, nats:// when it has none"
        )
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return ProviderError(f"{where}: timed out connecting")
    return ProviderError(f"{where}: cannot connect ({describe(exc, secrets)})")


def operation_error(what: str, exc: BaseException, url: str, secrets: Iterable[str]) -> LoaferError:
    """A failed broker operation: ProviderError (loafer errors pass through)."""
    if isinstance(exc, LoaferError):
        return exc
    where = f"NATS at {mask_url(url)}"
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return PublishRejected(f"{where}: {what}: no stream captures the subject")
    if isinstance(exc, nats.js.errors.APIError):
        return PublishRejected(f"{where}: {what} refused ({describe(exc, secrets)})")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return ProviderError(f"{where}: {what} timed out")
    return ProviderError(f"{where}: {what} failed ({describe(exc, secrets)})")
