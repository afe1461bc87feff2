"""SQSPublisher and SNSPublisher publish typed objects that reach their typed handlers
on SQS routes (dispatched on the ``type`` message attribute; through SNS in an envelope
and with raw delivery); the SNS envelope's attributes as headers (for the ``type``
discriminator and the trace context)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from loafer_core import Manager
from loafer_sqs import SNSPublisher, SNSQueueRoute, SQSPublisher, SQSRoute
from loafer_sqs.translator import SNSMessageTranslator
from tests.loafer_sqs.conftest import MakeQueue
from tests.typed_messages import Received, samples

pytestmark = pytest.mark.sqs


async def test_typed_objects_published_to_sqs_reach_their_typed_handlers(
    make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    async with SQSPublisher(url, **client_options) as publisher:
        for message in samples():
            await publisher.publish(message)
    received = Received()
    route = SQSRoute(
        url, {"options": {"WaitTimeSeconds": 1}, **client_options}, handler=received.handlers
    )
    async with Manager([route]):
        await received.wait()
    received.check()
    assert received.metadata["created"]["headers"] == {"type": "OrderCreated"}


@pytest.mark.parametrize("raw", [False, True], ids=["envelope", "raw"])
async def test_typed_objects_published_to_sns_reach_their_typed_handlers_on_sqs(
    raw: bool, sqs: Any, sns: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
        "QueueArn"
    ]
    topic_arn = (await sns.create_topic(Name=f"loafer-typed-{url.rsplit('-', 1)[-1]}"))["TopicArn"]
    try:
        await sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true" if raw else "false"},
        )
        async with SNSPublisher(topic_arn, **client_options) as publisher:
            for message in samples():
                await publisher.publish(message)
        received = Received()
        route = SNSQueueRoute(
            url, {"options": {"WaitTimeSeconds": 1}, **client_options}, handler=received.handlers
        )
        async with Manager([route]):
            await received.wait()
    finally:
        await sns.delete_topic(TopicArn=topic_arn)
    received.check()
    assert received.metadata["cancelled"]["headers"]["type"] == "order.cancelled"


def test_the_sns_translator_gives_the_envelopes_attributes_as_headers() -> None:
    envelope = {
        "Type": "Notification",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
        "Message": '{"id": 1}',
        "MessageAttributes": {
            "traceparent": {"Type": "String", "Value": "00-ab-cd-01"},
            "type": {"Type": "String", "Value": "OrderCreated"},
        },
    }
    raw = {"MessageId": "1", "Body": json.dumps(envelope), "MessageAttributes": {}}
    translator = SNSMessageTranslator()
    assert translator.message_headers(raw) == {
        "traceparent": "00-ab-cd-01",
        "type": "OrderCreated",
    }
    translated = translator.translate(raw)
    assert translated["metadata"]["headers"] == {
        "traceparent": "00-ab-cd-01",
        "type": "OrderCreated",
    }
    # a raw delivery, a plain body, a broken body: nothing to read (and no exception)
    assert SNSMessageTranslator(raw_delivery=True).message_headers(raw) is None
    assert translator.message_headers({"Body": '{"MessageAttributes": 1}'}) is None
    assert translator.message_headers({"Body": '"MessageAttributes" {'}) is None
