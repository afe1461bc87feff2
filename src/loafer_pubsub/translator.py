"""Translators for Pub/Sub messages.

A Pub/Sub delivery's ``raw`` is the message's data (``bytes``); its attributes, ordering
key, publish time and delivery attempt are in the delivery's metadata
(``metadata["headers"]`` is the attributes), which the handler receives merged with the
translator's. So core's translators fit as they are: JSON (the default), text, or the
raw bytes.
"""

from __future__ import annotations

from loafer_core.translator import JSONTranslator, PassThroughTranslator, TextTranslator

__all__ = ["PubSubJSONTranslator", "PubSubRawTranslator", "PubSubTextTranslator"]


class PubSubJSONTranslator(JSONTranslator):
    """A UTF-8 JSON body (the provider's default)."""


class PubSubTextTranslator(TextTranslator):
    """A UTF-8 text body, as ``str``."""


class PubSubRawTranslator(PassThroughTranslator):
    """The body's ``bytes``, unchanged."""
