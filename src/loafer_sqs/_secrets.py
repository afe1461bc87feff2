"""Keeping credentials out of reprs, exceptions and the AWS libraries' logs.

:func:`mask` replaces, in any text, the user:password of URLs, the values of secret
access keys, session tokens (``X-Amz-Security-Token``) and passwords written as
``name=value``, ``name: value``, ``'name': b'value'`` or ``<Name>value</Name>``, the
signature of AWS authorization headers and presigned URLs, and the credentials of
``Basic``/``Bearer`` authorization headers.

botocore logs every request at DEBUG, headers included (the session token, the
``Authorization`` header and the canonical request it signs). :func:`install_log_filter`
puts a :class:`SecretsFilter` on every ``botocore``/``aiobotocore`` logger: a filter on
a logger sees only the records logged there (not those of its children), so it goes on
each of them. It is installed when a provider or publisher is created (nothing happens
at import) and again when its client opens; installing twice changes nothing.
"""

from __future__ import annotations

import logging
import re

__all__ = ["MASK", "SecretsFilter", "install_log_filter", "is_clean", "mask"]

MASK = "***"

_SECRET_NAMES = (
    r"aws_secret_access_key|secret_access_key|secretaccesskey|secret_key"
    r"|aws_session_token|session_token|sessiontoken|x-amz-security-token|security_token"
    r"|securitytoken|password|passwd"
)

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"<>]+@"), rf"\g<1>{MASK}@"),
    # name=value, name: value, 'name': b'value', "name": "value", <Name>value
    (
        re.compile(rf"(?i)(\b(?:{_SECRET_NAMES})['\"]?\s*(?:[:=]|>)\s*b?['\"]?)[^\s'\"&,<>;)]+"),
        rf"\g<1>{MASK}",
    ),
    # Signature=hex (Authorization header), X-Amz-Signature=hex, botocore's "Signature:\n"
    (re.compile(r"(?i)(\b(?:x-amz-)?signature\s*[:=]\s*)[0-9a-f]{16,}"), rf"\g<1>{MASK}"),
    # Authorization: Basic/Bearer credentials
    (
        re.compile(
            r"(?i)(\bauthorization['\"]?\s*[:=]\s*b?['\"]?(?:basic|bearer|token)\s+)[^\s'\",]+"
        ),
        rf"\g<1>{MASK}",
    ),
)


def mask(text: object) -> str:
    """``str(text)`` with every credential it shows replaced by ``***``."""
    masked = str(text)
    for pattern, replacement in _PATTERNS:
        masked = pattern.sub(replacement, masked)
    return masked


def is_clean(exc: BaseException) -> bool:
    """True when neither ``exc`` nor any exception chained to it shows a credential."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for text in (str(current), repr(current)):
            if mask(text) != text:
                return False
        current = current.__cause__ or current.__context__
    return True


class SecretsFilter(logging.Filter):
    """Masks credentials (see :func:`mask`) in a record's message and exception text.

    The record itself is changed (message formatted and masked, arguments dropped), so
    every handler sees the masked text. It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record: logging reports it itself
            return True
        masked = mask(message)
        if masked != message:
            record.msg = masked
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return True


_FILTER = SecretsFilter()
_LIBRARIES = ("botocore", "aiobotocore")


def install_log_filter() -> None:
    """Put the :class:`SecretsFilter` on every ``botocore``/``aiobotocore`` logger that
    exists now (idempotent)."""
    manager = logging.Logger.manager
    names = {
        name
        for name, logger in list(manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and name.split(".", 1)[0] in _LIBRARIES
    }
    for name in names.union(_LIBRARIES):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
