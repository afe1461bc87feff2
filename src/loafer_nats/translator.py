"""Translators for NATS messages.

A NATS delivery's ``raw`` is the message body (``bytes``); its headers, subject and
JetStream metadata are in the delivery's metadata (``metadata["headers"]``,
``metadata["subject"]``, ``metadata["num_delivered"]``, ...), which the handler receives
merged with the translator's. So core's translators fit as they are: JSON (the
default), text, or the raw bytes.
"""

from __future__ import annotations

from loafer_core.translator import JSONTranslator, PassThroughTranslator, TextTranslator

__all__ = ["NATSJSONTranslator", "NATSRawTranslator", "NATSTextTranslator"]


class NATSJSONTranslator(JSONTranslator):
    """A UTF-8 JSON body (the provider's default)."""


class NATSTextTranslator(TextTranslator):
    """A UTF-8 text body, as ``str``."""


class NATSRawTranslator(PassThroughTranslator):
    """The body's ``bytes``, unchanged."""
