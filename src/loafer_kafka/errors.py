"""Errors of the Kafka plugin: the one translation table of aiokafka's exceptions at its
edge, and the masking rules.

What leaves this package is a :class:`~loafer_core.errors.ProviderError` (transient:
retried with backoff), a :class:`~loafer_core.errors.ConfigurationError` (fix the set-up)
or a :class:`~loafer_core.errors.PublishRefused` (the broker refused a message), never
with the SASL password of the ``kafka://`` URL in its text.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import errors as kafka_errors

from loafer_core import kit
from loafer_core.errors import ConfigurationError, LoaferError, ProviderError, PublishRefused

__all__ = [
    "LOGGERS",
    "URL_RULES",
    "check_url",
    "mask_url",
    "protect",
    "scrub",
    "secrets_of",
    "translate",
]

#: ``kafka://user:password@host:9092,host2:9092`` (``kafkas://`` with TLS).
URL_RULES = kit.UrlRules(
    schemes=("kafka", "kafkas"),
    mask_query=True,
    secret_query=r"password|token",
    separators=",",
)
#: Loggers whose records are filtered (and their children).
LOGGERS = ("aiokafka", "kafka", "loafer_kafka")

_CONFIG = (
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.UnsupportedSaslMechanismError,
    kafka_errors.IllegalSaslStateError,
    kafka_errors.InvalidTopicError,
    kafka_errors.UnsupportedVersionError,
    kafka_errors.SaslAuthenticationFailed,
    kafka_errors.AuthenticationFailedError,
)
_REFUSED = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidRequiredAcksError,
    kafka_errors.CorruptRecordException,
)


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``******``."""
    return kit.mask_url(url, URL_RULES)


def secrets_of(url: str) -> tuple[str, ...]:
    """The password (and secret query values) of a ``kafka://`` URL, longest first."""
    return kit.secrets_of(url, URL_RULES)


def check_url(owner: str, url: object) -> str:
    """``url`` if it is a ``kafka://`` or ``kafkas://`` URL read as meant, else a
    ConfigurationError saying what to fix (never showing the password)."""
    return kit.check_url(owner, url, URL_RULES)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL's password and ``secrets`` masked."""
    return kit.scrub(text, URL_RULES, tuple(secrets))


def protect(secrets: Iterable[str]) -> None:
    """Mask ``secrets`` in the records of aiokafka's and our loggers. Idempotent."""
    kit.protect(LOGGERS, secrets, urls=URL_RULES)


def translate(
    what: str,
    exc: BaseException,
    *,
    where: str,
    secrets: Iterable[str] = (),
    publishing: bool = False,
) -> LoaferError:
    """The table: what ``exc``, met while doing ``what`` at ``where``, becomes.

    - authorisation, SASL, an invalid topic name, an unsupported protocol version:
      ConfigurationError;
    - an unknown topic: ConfigurationError (PublishRefused when publishing);
    - a record too large or refused: PublishRefused;
    - a connection loss, a timeout, any other Kafka error: ProviderError (transient).
    """
    if isinstance(exc, LoaferError):
        return exc
    detail = scrub(" ".join(str(exc).split())[:300], secrets) or type(exc).__name__
    text = f"Kafka at {where}: {what}: {type(exc).__name__}: {detail}"
    if isinstance(exc, kafka_errors.UnknownTopicOrPartitionError):
        if publishing:
            return PublishRefused(f"{text} (the topic does not exist)")
        return ConfigurationError(f"{text}; create the topic or pass create=True")
    if isinstance(exc, _CONFIG):
        return ConfigurationError(f"{text}; check the URL's credentials and the ACLs")
    if isinstance(exc, _REFUSED):
        return PublishRefused(text) if publishing else ProviderError(text)
    return ProviderError(text)
