"""Errors of the Pub/Sub plugin: the one translation table of aiohttp's and
gcloud-aio's exceptions at its edge, and the masking rules.

What leaves this package is a :class:`~loafer_core.errors.ProviderError` (transient:
retried with backoff), a :class:`~loafer_core.errors.ConfigurationError` (fix the set-up)
or a :class:`~loafer_core.errors.PublishRefused` (the service refused a message), never
with a credential in its text: an OAuth bearer token, an API key in a URL's query, a
service account's private key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import aiohttp

from loafer_core import kit
from loafer_core.errors import ConfigurationError, LoaferError, ProviderError, PublishRefused

__all__ = [
    "LOGGERS",
    "TEXT_RULES",
    "URL_RULES",
    "ApiError",
    "mask_url",
    "protect",
    "scrub",
    "secrets_of",
    "translate",
]

#: API roots: every query value is masked (an API key, an access token).
URL_RULES = kit.UrlRules(
    schemes=("http", "https"),
    lone_user_is_secret=True,
    mask_query=True,
    secret_query=r"key|token|access_token|sig",
)
#: Credentials written as ``name=value`` or JSON ``"name": "value"`` in library text.
TEXT_RULES = kit.TextRules(
    secret_names=(
        "private_key",
        "private_key_id",
        "access_token",
        "refresh_token",
        "client_secret",
    ),
)
#: Loggers whose records are filtered (and their children).
LOGGERS = ("gcloud.aio", "aiohttp", "loafer_pubsub")


class ApiError(Exception):
    """An answer of the API with an error status (raised by :mod:`loafer_pubsub._api`)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def mask_url(url: str) -> str:
    """``url`` with its secret query values replaced by ``******``."""
    return kit.mask_url(url, URL_RULES)


def secrets_of(url: str) -> tuple[str, ...]:
    """The secret query values of an API root (``key=...``), longest first."""
    return kit.secrets_of(url, URL_RULES)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL's secrets, ``name=value`` credentials and ``secrets``
    masked."""
    return kit.mask_text(kit.scrub(text, URL_RULES, tuple(secrets)), TEXT_RULES)


def protect(secrets: Iterable[str]) -> None:
    """Mask ``secrets`` and the credentials :data:`TEXT_RULES` names in the records of
    gcloud-aio's, aiohttp's and our loggers. Idempotent."""
    kit.protect(LOGGERS, secrets, urls=URL_RULES, text=TEXT_RULES)


def _detail(exc: BaseException, secrets: Iterable[str]) -> str:
    text = exc.message if isinstance(exc, ApiError) else str(exc)
    return scrub(" ".join(text.split())[:300], secrets) or type(exc).__name__


def translate(
    what: str,
    exc: BaseException,
    *,
    where: str,
    secrets: Iterable[str] = (),
    publishing: bool = False,
) -> LoaferError:
    """The table: what ``exc``, met while doing ``what``, becomes.

    - 401/403: ConfigurationError (credentials, permissions);
    - 404: ConfigurationError saying what is missing (PublishRefused when publishing:
      the topic is gone);
    - 400 (invalid argument), 409 and other 4xx but 408/429: ConfigurationError, or
      PublishRefused when publishing (the message itself was refused);
    - 408, 429, 5xx, a connection or timeout error: ProviderError (transient).
    """
    if isinstance(exc, LoaferError):
        return exc
    detail = _detail(exc, secrets)
    text = f"Pub/Sub at {where}: {what}"
    if isinstance(exc, ApiError):
        status = exc.status
        if status in (401, 403):
            return ConfigurationError(
                f"{text}: {status} {exc.reason} ({detail}); check the credentials "
                "(service_file or the application default credentials) and their roles"
            )
        if status == 404:
            if publishing:
                return PublishRefused(f"{text}: not found ({detail})")
            return ConfigurationError(f"{text}: not found ({detail})")
        if status in (408, 429) or status >= 500:
            return ProviderError(f"{text}: {status} {exc.reason} ({detail})")
        if publishing:
            return PublishRefused(f"{text}: refused, {status} {exc.reason} ({detail})")
        return ConfigurationError(f"{text}: {status} {exc.reason} ({detail})")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return ProviderError(f"{text}: timed out")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return ProviderError(f"{text}: cannot reach the API ({type(exc).__name__}: {detail})")
    return ProviderError(f"{text}: {type(exc).__name__}: {detail}")
