"""Translators for SQS messages (the raw message is the SQS message dict).

None of them mutates the raw message (Loafer 2.x's SQS translator popped ``Body``, so
error handlers saw no body). Undecodable input raises
:class:`~loafer_core.errors.TranslationError`, which reaches the route's error handler.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from loafer_core.errors import RejectMessage, TranslationError
from loafer_core.translator import decode_json, decode_text

__all__ = [
    "SNSMessageTranslator",
    "SQSMessageTranslator",
    "SQSTextTranslator",
    "envelope_headers",
]


def _body(raw: Any) -> str:
    if not isinstance(raw, Mapping):
        raise TranslationError(f"expected an SQS message dict, got {type(raw).__name__}")
    if "Body" not in raw:
        raise TranslationError("the SQS message has no Body")
    return decode_text(raw["Body"])


def _metadata(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Loafer's metadata: the SQS message without its body (a copy)."""
    return {key: value for key, value in raw.items() if key != "Body"}


_SNS_TYPES = frozenset({"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"})


#: Every key an SNS envelope may have (notifications and subscription confirmations).
_ENVELOPE_KEYS = frozenset(
    {
        "Type",
        "MessageId",
        "TopicArn",
        "Subject",
        "Message",
        "Timestamp",
        "SignatureVersion",
        "Signature",
        "SigningCertURL",
        "UnsubscribeURL",
        "MessageAttributes",
        "SequenceNumber",
        "MessageDeduplicationId",
        "MessageGroupId",
        "Token",
        "SubscribeURL",
    }
)


def _looks_like_envelope(value: Any) -> bool:
    """What SNS writes: a JSON object with an SNS ``Type``, or with TopicArn and Message;
    or, as Loafer 2.x unwrapped it (and its users' handler tests build), a
    ``{"Message": "..."}`` object without them, unless it is clearly not an envelope: its
    ``Message`` is not a string, or it has a key no SNS envelope has."""
    if not isinstance(value, Mapping):
        return False
    if value.get("Type") in _SNS_TYPES or ("TopicArn" in value and "Message" in value):
        return True
    return isinstance(value.get("Message"), str) and value.keys() <= _ENVELOPE_KEYS


def envelope_headers(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """An SNS envelope's ``MessageAttributes`` (``{"type": {"Type": "String", "Value":
    "x"}}``) as plain headers (``{"type": "x"}``)."""
    attributes = envelope.get("MessageAttributes")
    headers: dict[str, Any] = {}
    if isinstance(attributes, Mapping):
        for name, value in attributes.items():
            if isinstance(value, Mapping) and "Value" in value:
                headers[str(name)] = value["Value"]
    return headers


def _sqs_headers(raw: Mapping[str, Any]) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    attributes = raw.get("MessageAttributes")
    if isinstance(attributes, Mapping):
        for name, value in attributes.items():
            if isinstance(value, Mapping):
                if "StringValue" in value:
                    headers[str(name)] = value["StringValue"]
                elif "BinaryValue" in value:
                    headers[str(name)] = value["BinaryValue"]
    return headers


def _check_envelope(envelope: Any) -> Mapping[str, Any]:
    """A well-formed notification envelope, or TranslationError/RejectMessage saying why."""
    if not isinstance(envelope, Mapping):
        raise TranslationError(
            f"the SQS message is not an SNS envelope: a JSON {type(envelope).__name__}, "
            "expected an object"
        )
    kind = envelope.get("Type", "Notification")
    if kind in {"SubscriptionConfirmation", "UnsubscribeConfirmation"}:
        # not a message for the handler, and retrying it cannot help: rejected, with why
        raise RejectMessage(
            f"an SNS {kind} (topic {envelope.get('TopicArn')!r}), not a notification: "
            "confirm the subscription in SNS; SQS subscriptions are confirmed by SNS itself"
        )
    if kind != "Notification":
        raise TranslationError(f"the SNS envelope has an unknown Type {kind!r}")
    if "TopicArn" not in envelope and "Type" in envelope:
        # SNS writes both; Loafer 2.x's {"Message": ...} (no Type) needs neither
        raise TranslationError("the SNS envelope has no TopicArn")
    message = envelope.get("Message")
    if not isinstance(message, str):
        raise TranslationError(
            "the SNS envelope's Message is "
            + ("missing" if message is None else f"a {type(message).__name__}, not a string")
        )
    return envelope


class SQSMessageTranslator:
    """JSON body -> content; metadata is the rest of the SQS message (``MessageId``,
    ``ReceiptHandle``, ``Attributes``, ``MessageAttributes``...), as in Loafer."""

    def translate(self, raw: Any) -> Mapping[str, Any]:
        """Decode the message's JSON ``Body``."""
        content = decode_json(_body(raw), "the SQS message body")
        return {"content": content, "metadata": _metadata(raw)}


class SQSTextTranslator:
    """The body as text (``str``); metadata as :class:`SQSMessageTranslator`."""

    def translate(self, raw: Any) -> Mapping[str, Any]:
        """Return the message's ``Body`` unchanged."""
        return {"content": _body(raw), "metadata": _metadata(raw)}


class SNSMessageTranslator:
    """Messages from an SNS topic subscribed by the queue.

    Unwraps the SNS envelope (``{"Type": "Notification", "Message": "...", ...}``) and
    decodes the inner message as JSON (a ``{"Message": "..."}`` object without ``Type``
    and ``TopicArn`` is unwrapped too, as Loafer 2.x did, unless it is clearly not an
    envelope: its ``Message`` is not a string, or it has a key SNS never writes).
    Metadata is the envelope without ``Message`` (``TopicArn``, ``Subject``,
    ``Timestamp``, ``MessageAttributes``...) plus the SQS message's ``sqs`` metadata, and
    ``headers``: the SNS message attributes as plain values (``{"type":
    "OrderCreated"}``, what ``header("type")`` reads), over the SQS message's own. With a
    raw-delivery subscription there is no envelope: the body itself is decoded (the SNS
    attributes are then the SQS message's attributes).

    :meth:`message_headers` gives the envelope's attributes before translation, for the
    tracing middleware (:mod:`loafer_core.ext.otel`) to continue the publisher's trace.

    :param raw_delivery: ``True`` for raw-delivery subscriptions, ``False`` to require
        an envelope, ``None`` (default) to detect it per message.
    :param json_message: decode the inner message as JSON (default); ``False`` gives
        the text.
    """

    def __init__(self, *, raw_delivery: bool | None = None, json_message: bool = True) -> None:
        self.raw_delivery = raw_delivery
        self.json_message = json_message

    def translate(self, raw: Any) -> Mapping[str, Any]:
        """Return the inner message as content."""
        text = _body(raw)
        sqs = _metadata(raw)
        if self.raw_delivery is True:
            return self._content(text, {"sqs": sqs}, "the SNS message")
        if self.raw_delivery is False:
            envelope = decode_json(text, "the SNS envelope")
        else:  # detect: what SNS writes is an envelope (checked), anything else raw
            try:
                envelope = json.loads(text)
            except (ValueError, RecursionError):
                envelope = None
            if not _looks_like_envelope(envelope):
                return self._content(text, {"sqs": sqs}, "the SNS message")
        envelope = _check_envelope(envelope)
        metadata = {k: v for k, v in envelope.items() if k != "Message"}
        metadata["sqs"] = sqs
        metadata["headers"] = {**_sqs_headers(raw), **envelope_headers(envelope)}
        return self._content(envelope["Message"], metadata, "the SNS inner message")

    def message_headers(self, raw: Any) -> dict[str, Any] | None:
        """The SNS message attributes of an envelope (``None`` for a raw delivery, whose
        attributes the provider's ``headers`` already hold, or a body that is not an
        envelope). Never raises: :meth:`translate` reports a bad message."""
        if self.raw_delivery is True or not isinstance(raw, Mapping):
            return None
        body = raw.get("Body")
        if not isinstance(body, str) or '"MessageAttributes"' not in body:
            return None  # no attributes to read: no parse
        try:
            envelope = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if not _looks_like_envelope(envelope):
            return None
        return envelope_headers(envelope) or None

    def _content(self, text: str, metadata: dict[str, Any], what: str) -> Mapping[str, Any]:
        content = decode_json(text, what) if self.json_message else text
        return {"content": content, "metadata": metadata}
