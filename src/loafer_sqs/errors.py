"""Translate botocore/aiohttp exceptions into loafer-core's exception tree.

Only this module (and the code that calls it at the edge) knows about botocore's
exception types; everything above sees :class:`~loafer_core.errors.ConfigurationError`
or :class:`~loafer_core.errors.ProviderError`.
"""

from __future__ import annotations

from typing import Any

from loafer_core import kit
from loafer_core.errors import ConfigurationError, LoaferError, ProviderError

__all__ = [
    "LOGGERS",
    "TEXT_RULES",
    "cause",
    "error_code",
    "is_missing_queue",
    "mask",
    "protect",
    "translate_error",
]

#: Credentials in the AWS libraries' texts (see :class:`loafer_core.kit.TextRules`): URL
#: user information, secret access keys, session tokens (``X-Amz-Security-Token``),
#: passwords, request signatures and ``Authorization`` credentials.
TEXT_RULES = kit.TextRules(
    secret_names=(
        "aws_secret_access_key",
        "secret_access_key",
        "secretaccesskey",
        "secret_key",
        "aws_session_token",
        "session_token",
        "sessiontoken",
        "x-amz-security-token",
        "security_token",
        "securitytoken",
        "password",
        "passwd",
    )
)
#: botocore logs every request at DEBUG, headers included (the session token, the
#: ``Authorization`` header and the canonical request it signs).
LOGGERS = ("botocore", "aiobotocore")


def mask(text: object) -> str:
    """``str(text)`` with every credential it shows replaced by ``******``."""
    return kit.mask_text(text, TEXT_RULES)


def protect() -> None:
    """Mask credentials in the records of every ``botocore``/``aiobotocore`` logger that
    exists now. Called when a provider or publisher is created (nothing happens at
    import) and again when its client opens; installing twice changes nothing."""
    kit.protect(LOGGERS, text=TEXT_RULES)


#: Error codes that mean the set-up is wrong (retrying will not help).
_CONFIGURATION_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NotFound",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "InvalidAddress",
        "InvalidSecurity",
        "ExpiredToken",
        "ExpiredTokenException",
        "KMS.AccessDeniedException",
        "KMS.NotFoundException",
    }
)

_MISSING_QUEUE_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NotFound"}
)

_CONFIGURATION_EXCEPTIONS = frozenset(
    {
        "NoCredentialsError",
        "PartialCredentialsError",
        "NoRegionError",
        "ParamValidationError",
        "InvalidRegionError",
        "UnknownServiceError",
        "ProfileNotFound",
        "InvalidEndpointConfigurationError",
        "UnknownCredentialError",
    }
)


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (``None`` for other exceptions)."""
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error")
        if isinstance(error, dict):
            code = error.get("Code")
            return str(code) if code is not None else None
    return None


def is_missing_queue(exc: BaseException) -> bool:
    """True when ``exc`` says the queue does not exist."""
    return error_code(exc) in _MISSING_QUEUE_CODES


def cause(exc: BaseException) -> BaseException | None:
    """What to chain a translated error to (``raise ... from cause(exc)``): ``exc``,
    unless its text or a chained exception's shows a credential (botocore puts the
    endpoint URL, user:password included, in its connection errors); then nothing."""
    return exc if kit.is_clean(exc, TEXT_RULES) else None


def translate_error(exc: BaseException, doing: str) -> LoaferError:
    """Map ``exc`` (raised while ``doing`` something) to a loafer-core exception.

    Wrong configuration (missing queue, refused or missing credentials, no region, bad
    parameters) becomes :class:`ConfigurationError`; everything else (network errors,
    throttling, server errors) becomes :class:`ProviderError`. The message is masked
    (:func:`mask`): no URL credentials, keys or tokens.
    """
    if isinstance(exc, LoaferError):
        return exc
    error = _translate(exc, doing)
    masked = mask(error.args[0])
    return type(error)(masked) if masked != error.args[0] else error


def _translate(exc: BaseException, doing: str) -> LoaferError:
    code = error_code(exc)
    name = type(exc).__name__
    if code in _MISSING_QUEUE_CODES:
        return ConfigurationError(f"{doing}: the queue does not exist ({code}); create it first")
    if code in _CONFIGURATION_CODES:
        return ConfigurationError(
            f"{doing}: AWS refused the request ({code}): check the credentials, "
            f"region and permissions"
        )
    if name in _CONFIGURATION_EXCEPTIONS:
        return ConfigurationError(f"{doing}: {name}: {exc}")
    if code is not None:
        return ProviderError(f"{doing}: {code}: {exc}")
    return ProviderError(f"{doing}: {name}: {exc}")
