"""Errors of the NATS plugin, and the translation of nats-py's exceptions at its edge.

nats-py's exceptions stay inside this package: what leaves it is a
:class:`~loafer_core.errors.ProviderError` (transient: retried with backoff), a
:class:`~loafer_core.errors.ConfigurationError` (fix the set-up), or a
:class:`MessageTooLarge`, never with a password or token in its text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import nats.errors
import nats.js.errors

from loafer_core.errors import ConfigurationError, LoaferError, ProviderError
from loafer_nats._secrets import mask_url, scrub

__all__ = [
    "MessageTooLarge",
    "PublishRejected",
    "connect_error",
    "describe",
    "mask_url",
    "operation_error",
]


class MessageTooLarge(LoaferError, ValueError):
    """A message (body and headers) larger than the server's ``max_payload``: refused
    before it is sent (the server would close the connection on it)."""


class PublishRejected(ProviderError):
    """JetStream answered a publish with an error (or no stream captures the subject)."""


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
