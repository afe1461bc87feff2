"""loafer-core: an asyncio message-dispatch framework.

A service defines routes, each tying a provider (a broker queue) to a handler; a manager
runs them, settling every delivery with an outcome (ACCEPT, RETRY, REJECT, RELEASE).

Importing this package imports no broker library: plugins are found through the
``loafer.providers`` entry point group (see :mod:`loafer_core.plugins`).
"""

from loafer_core.errors import (
    ConfigurationError,
    DeleteMessage,
    InvalidMessage,
    LoaferError,
    LoaferException,
    ProviderError,
    RejectMessage,
    RetryMessage,
    TranslationError,
)
from loafer_core.handlers import Handlers, field, header, on
from loafer_core.manager import LoaferManager, Manager
from loafer_core.outcome import ACCEPT, REJECT, RELEASE, RETRY, Outcome, OutcomeKind
from loafer_core.policy import DEFAULT_RETRY, Backoff, RetryPolicy
from loafer_core.provider import Capabilities, Delivery, Provider, Support
from loafer_core.route import Route
from loafer_core.translator import (
    JSONTranslator,
    StringMessageTranslator,
    TextTranslator,
    Translator,
)

__all__ = [
    "ACCEPT",
    "DEFAULT_RETRY",
    "REJECT",
    "RELEASE",
    "RETRY",
    "Backoff",
    "Capabilities",
    "ConfigurationError",
    "DeleteMessage",
    "Delivery",
    "Handlers",
    "InvalidMessage",
    "JSONTranslator",
    "LoaferError",
    "LoaferException",
    "LoaferManager",
    "Manager",
    "Outcome",
    "OutcomeKind",
    "Provider",
    "ProviderError",
    "RejectMessage",
    "RetryMessage",
    "RetryPolicy",
    "Route",
    "StringMessageTranslator",
    "Support",
    "TextTranslator",
    "TranslationError",
    "Translator",
    "field",
    "header",
    "on",
]

__version__ = "3.0.0.dev0"
