"""Translators for SQS messages (the raw message is the SQS message dict).

None of them mutates the raw message (Loafer 2.x's SQS translator popped ``Body``, so
error handlers saw no body). Undecodable input raises
:class:`~loafer_core.errors.TranslationError`, which reaches the route's error handler.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from loafer_core.errors import TranslationError
from loafer_core.translator import decode_text

__all__ = ["SNSMessageTranslator", "SQSMessageTranslator", "SQSTextTranslator"]


def _body(raw: Any) -> str:
    if not isinstance(raw, Mapping):
        raise TranslationError(f"expected an SQS message dict, got {type(raw).__name__}")
    if "Body" not in raw:
        raise TranslationError("the SQS message has no Body")
    return decode_text(raw["Body"])


def _metadata(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Loafer's metadata: the SQS message without its body (a copy)."""
    return {key: value for key, value in raw.items() if key != "Body"}


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise TranslationError(f"{what} is not valid JSON: {exc}") from exc


class SQSMessageTranslator:
    """JSON body -> content; metadata is the rest of the SQS message (``MessageId``,
    ``ReceiptHandle``, ``Attributes``, ``MessageAttributes``...), as in Loafer."""

    def translate(self, raw: Any) -> Mapping[str, Any]:
        """Decode the message's JSON ``Body``."""
        content = _json(_body(raw), "the SQS message body")
        return {"content": content, "metadata": _metadata(raw)}


class SQSTextTranslator:
    """The body as text (``str``); metadata as :class:`SQSMessageTranslator`."""

    def translate(self, raw: Any) -> Mapping[str, Any]:
        """Return the message's ``Body`` unchanged."""
        return {"content": _body(raw), "metadata": _metadata(raw)}


class SNSMessageTranslator:
    """Messages from an SNS topic subscribed by the queue.

    Unwraps the SNS envelope (``{"Type": "Notification", "Message": "...", ...}``) and
    decodes the inner message as JSON; metadata is the envelope without ``Message``
    (``TopicArn``, ``Subject``, ``Timestamp``, ``MessageAttributes``...) plus the SQS
    message's ``sqs`` metadata. With a raw-delivery subscription there is no envelope:
    the body itself is decoded.

    :param raw_delivery: ``True`` for raw-delivery subscriptions, ``False`` to require
        an envelope, ``None`` (default) to detect it per message.
    :param json_message: decode the inner message as JSON (default); ``False`` gives
        the text.
    """

    def __init__(self, *, raw_delivery: bool | None = None, json_message: bool = True) -> None:
        self.raw_delivery = raw_delivery
        self.json_message = json_message

    @staticmethod
    def _is_envelope(value: Any) -> bool:
        return (
            isinstance(value, Mapping)
            and value.get("Type") in {"Notification", None}
            and isinstance(value.get("Message"), str)
            and "TopicArn" in value
        )

    def translate(self, raw: Any) -> Mapping[str, Any]:
        """Return the inner message as content."""
        text = _body(raw)
        sqs = _metadata(raw)
        if self.raw_delivery is True:
            return self._content(text, {"sqs": sqs}, "the SNS message")
        envelope = _json(text, "the SNS envelope") if self.raw_delivery is False else None
        if envelope is None:
            try:
                envelope = json.loads(text)
            except ValueError:
                envelope = None
        if self._is_envelope(envelope):
            assert isinstance(envelope, Mapping)
            metadata = {k: v for k, v in envelope.items() if k != "Message"}
            metadata["sqs"] = sqs
            return self._content(envelope["Message"], metadata, "the SNS inner message")
        if self.raw_delivery is False:
            raise TranslationError("the SQS message is not an SNS envelope (no Message/TopicArn)")
        return self._content(text, {"sqs": sqs}, "the SNS message")

    def _content(self, text: str, metadata: dict[str, Any], what: str) -> Mapping[str, Any]:
        content = _json(text, what) if self.json_message else text
        return {"content": content, "metadata": metadata}
