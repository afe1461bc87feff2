"""Translators: decoding, metadata, never mutating the raw message, bad input."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from loafer_core.errors import TranslationError
from loafer_sqs import SNSMessageTranslator, SQSMessageTranslator, SQSTextTranslator

pytestmark = pytest.mark.sqs


def sqs_message(body: Any) -> dict[str, Any]:
    return {
        "MessageId": "m-1",
        "ReceiptHandle": "rh-1",
        "MD5OfBody": "x",
        "Body": body,
        "Attributes": {"ApproximateReceiveCount": "1"},
        "MessageAttributes": {"a": {"DataType": "String", "StringValue": "b"}},
    }


def envelope(message: str, **extra: Any) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "sns-1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:topic",
            "Subject": "subj",
            "Message": message,
            "Timestamp": "2026-01-01T00:00:00.000Z",
            **extra,
        }
    )


def test_sqs_translator_decodes_json_and_keeps_raw() -> None:
    raw = sqs_message('{"key": true}')
    before = copy.deepcopy(raw)
    result = SQSMessageTranslator().translate(raw)
    assert result["content"] == {"key": True}
    assert result["metadata"]["MessageId"] == "m-1"
    assert result["metadata"]["MessageAttributes"] == raw["MessageAttributes"]
    assert "Body" not in result["metadata"]
    assert raw == before


@pytest.mark.parametrize("body", ['{"unterminated": ', "not json", b"\xff\xfe not utf-8", None, 12])
def test_sqs_translator_bad_bodies(body: Any) -> None:
    raw = sqs_message(body)
    before = copy.deepcopy(raw)
    with pytest.raises(TranslationError):
        SQSMessageTranslator().translate(raw)
    assert raw == before


def test_sqs_translator_needs_a_message_dict() -> None:
    with pytest.raises(TranslationError):
        SQSMessageTranslator().translate(b'{"a": 1}')
    with pytest.raises(TranslationError):
        SQSMessageTranslator().translate({"MessageId": "x"})


def test_text_translator() -> None:
    raw = sqs_message("plain text")
    assert SQSTextTranslator().translate(raw)["content"] == "plain text"


def test_sns_translator_unwraps_envelope() -> None:
    raw = sqs_message(envelope('{"order": 7}'))
    before = copy.deepcopy(raw)
    result = SNSMessageTranslator().translate(raw)
    assert result["content"] == {"order": 7}
    metadata = result["metadata"]
    assert metadata["TopicArn"].endswith(":topic")
    assert metadata["Subject"] == "subj"
    assert "Message" not in metadata
    assert metadata["sqs"]["MessageId"] == "m-1"
    assert raw == before


def test_sns_translator_raw_delivery() -> None:
    raw = sqs_message('{"order": 8}')
    assert SNSMessageTranslator().translate(raw)["content"] == {"order": 8}
    assert SNSMessageTranslator(raw_delivery=True).translate(raw)["content"] == {"order": 8}
    with pytest.raises(TranslationError):
        SNSMessageTranslator(raw_delivery=False).translate(raw)


def test_sns_translator_broken_inner_message() -> None:
    raw = sqs_message(envelope('{"broken": '))
    with pytest.raises(TranslationError, match="inner"):
        SNSMessageTranslator().translate(raw)


def test_sns_translator_text_message() -> None:
    raw = sqs_message(envelope("hello"))
    assert SNSMessageTranslator(json_message=False).translate(raw)["content"] == "hello"


def test_sns_translator_not_json_at_all() -> None:
    with pytest.raises(TranslationError):
        SNSMessageTranslator().translate(sqs_message("<xml/>"))


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "translator",
    [SQSMessageTranslator(), SNSMessageTranslator(), SNSMessageTranslator(raw_delivery=False)],
)
def test_deeply_nested_json_is_a_translation_error(translator: Any) -> None:
    with pytest.raises(TranslationError, match="nested too deeply"):
        translator.translate(sqs_message(DEEP))


def test_deeply_nested_inner_sns_message_is_a_translation_error() -> None:
    with pytest.raises(TranslationError, match="inner message is JSON nested too deeply"):
        SNSMessageTranslator().translate(sqs_message(envelope(DEEP)))


def _envelope_dict(**fields: Any) -> str:
    base = {
        "Type": "Notification",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:topic",
        "Message": "{}",
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not _DROP})


_DROP = object()


@pytest.mark.parametrize("raw_delivery", [None, False])
@pytest.mark.parametrize(
    ("body", "match"),
    [
        (_envelope_dict(Message={"a": 1}), "Message is a dict, not a string"),
        (_envelope_dict(Message=["a"]), "Message is a list, not a string"),
        (_envelope_dict(Message=_DROP), "Message is missing"),
        (_envelope_dict(TopicArn=_DROP), "no TopicArn"),
    ],
)
def test_malformed_sns_envelopes_are_translation_errors(
    raw_delivery: bool | None, body: str, match: str
) -> None:
    """Before: detection fell back to 'raw delivery' and the envelope reached the handler."""
    with pytest.raises(TranslationError, match=match):
        SNSMessageTranslator(raw_delivery=raw_delivery).translate(sqs_message(body))


def test_a_list_is_not_an_envelope_when_one_is_required() -> None:
    with pytest.raises(TranslationError, match="not an SNS envelope: a JSON list"):
        SNSMessageTranslator(raw_delivery=False).translate(sqs_message("[1, 2]"))
    # detected: a list is what a raw-delivery subscription can carry
    assert SNSMessageTranslator().translate(sqs_message("[1, 2]"))["content"] == [1, 2]


@pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_subscription_confirmations_are_rejected_with_the_reason(kind: str) -> None:
    from loafer_core.errors import RejectMessage

    body = _envelope_dict(
        Type=kind, Message="You have chosen to subscribe", SubscribeURL="https://x"
    )
    with pytest.raises(RejectMessage, match=f"an SNS {kind}") as caught:
        SNSMessageTranslator().translate(sqs_message(body))
    assert "https://x" not in str(caught.value)


@pytest.mark.parametrize("raw_delivery", [None, False])
def test_a_loafer_2_style_envelope_without_type_or_topic_is_unwrapped(
    raw_delivery: bool | None,
) -> None:
    """Loafer 2.x unwrapped any ``{"Message": ...}`` body (its users' handler tests build
    such envelopes): an object with a string Message and only SNS's keys is one."""
    translator = SNSMessageTranslator(raw_delivery=raw_delivery)
    body = json.dumps({"Message": json.dumps({"order": 9}), "Subject": "s"})
    result = translator.translate(sqs_message(body))
    assert result["content"] == {"order": 9}
    assert result["metadata"]["Subject"] == "s"
    assert "Message" not in result["metadata"]
    text = SNSMessageTranslator(raw_delivery=raw_delivery, json_message=False)
    assert text.translate(sqs_message(json.dumps({"Message": "hi"})))["content"] == "hi"
    with pytest.raises(TranslationError, match="inner message is not valid JSON"):
        translator.translate(sqs_message(json.dumps({"Message": "not json"})))


@pytest.mark.parametrize(
    "payload",
    [
        {"Message": "hello", "user": 7},  # a key SNS never writes: the user's own object
        {"Message": {"nested": True}},  # Message not a string
        {"Message": 3},
    ],
)
def test_an_object_clearly_not_an_envelope_is_a_raw_delivery(payload: dict[str, Any]) -> None:
    result = SNSMessageTranslator().translate(sqs_message(json.dumps(payload)))
    assert result["content"] == payload
    assert set(result["metadata"]) == {"sqs"}
