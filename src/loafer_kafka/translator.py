"""Translators for Kafka records.

A Kafka delivery's ``raw`` is the record's value (``bytes``; ``b""`` for a null value);
its headers, key, partition, offset and timestamp are in the delivery's metadata
(``metadata["headers"]`` is the headers, decoded as UTF-8), which the handler receives
merged with the translator's. So core's translators fit as they are: JSON (the
default), text, or the raw bytes.
"""

from __future__ import annotations

from loafer_core.translator import JSONTranslator, PassThroughTranslator, TextTranslator

__all__ = ["KafkaJSONTranslator", "KafkaRawTranslator", "KafkaTextTranslator"]


class KafkaJSONTranslator(JSONTranslator):
    """A UTF-8 JSON value (the provider's default)."""


class KafkaTextTranslator(TextTranslator):
    """A UTF-8 text value, as ``str``."""


class KafkaRawTranslator(PassThroughTranslator):
    """The value's ``bytes``, unchanged."""
