"""Helpers shared by the RabbitMQ provider and publisher: URL masking, error translation.

aio-pika's and aiormq's exceptions stay inside this package: everything that leaves it is
a :class:`~loafer_core.errors.ProviderError` (transient) or a
:class:`~loafer_core.errors.ConfigurationError` (fix the set-up), with the URL's password
masked.
"""

from __future__ import annotations

import asyncio

import aiormq.exceptions
from yarl import URL

from loafer_core.errors import ConfigurationError, LoaferError, ProviderError
from loafer_rabbit._url import MASK, mask_url, scrub, vhost_of

__all__ = [
    "MASK",
    "connect_error",
    "mask_url",
    "operation_error",
    "scrub",
    "vhost_of",
]


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
