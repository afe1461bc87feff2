"""SQSPublisher and SNSPublisher against moto."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from loafer_core.errors import ConfigurationError, ProviderError
from loafer_sqs import SQSPublisher
from loafer_sqs.publisher import _Entry, encode_body, message_attributes
from tests.loafer_sqs.conftest import CallCounter, MakeQueue, queue_counts

pytestmark = pytest.mark.sqs


async def receive_all(sqs: Any, url: str, n: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while len(got) < n:
            response = await sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            for message in response.get("Messages", []):
                got.append(message)
                await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return got


async def test_publishes_are_batched(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    counter = CallCounter()
    async with SQSPublisher(url, session=counter.session(), **client_options) as publisher:
        await asyncio.gather(*(publisher.publish({"i": i}) for i in range(25)))
    assert counter.count("SendMessageBatch") == 3
    assert counter.largest_batch() == 10
    messages = await receive_all(sqs, url, 25)
    assert sorted(json.loads(m["Body"])["i"] for m in messages) == list(range(25))


async def test_publish_by_name_with_attributes(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    name = url.rsplit("/", 1)[-1]
    publisher = SQSPublisher(**client_options)
    try:
        await publisher.publish(
            "plain text", queue=name, headers={"kind": "t", "n": 3, "blob": b"\x00\x01"}
        )
    finally:
        await publisher.close()
        await publisher.close()
    [message] = await receive_all(sqs, url, 1)
    assert message["Body"] == "plain text"
    attributes = message["MessageAttributes"]
    assert attributes["kind"] == {"DataType": "String", "StringValue": "t"}
    assert attributes["n"] == {"DataType": "Number", "StringValue": "3"}
    assert attributes["blob"]["BinaryValue"] == b"\x00\x01"


async def test_fifo_publish_needs_group_and_keeps_order(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue(fifo=True)
    async with SQSPublisher(url, **client_options) as publisher:
        with pytest.raises(ConfigurationError, match="group_id"):
            await publisher.publish({"x": 1})
        for i in range(5):
            await publisher.publish({"i": i}, group_id="g")
        await publisher.publish({"i": 99}, group_id="g", deduplication_id="same")
        await publisher.publish({"i": 100}, group_id="g", deduplication_id="same")
    messages = await receive_all(sqs, url, 6)
    assert [json.loads(m["Body"])["i"] for m in messages] == [0, 1, 2, 3, 4, 99]
    assert all(m["Attributes"]["MessageGroupId"] == "g" for m in messages)
    assert await queue_counts(sqs, url) == (0, 0)


async def test_failed_entry_raises_for_its_caller_only(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    async with SQSPublisher(url, linger=0.05, **client_options) as publisher:
        results = await asyncio.gather(
            publisher.publish({"ok": 1}),
            # DelaySeconds 901 (SQS allows 0-900; publish(delay=) refuses it before
            # sending): an entry SQS fails on its own in the batch
            publisher._publish(_Entry(url, '{"bad": 1}', {}, None, None, 901)),
            return_exceptions=True,
        )
    assert results[0] is None
    assert isinstance(results[1], ProviderError)
    assert "InvalidParameterValue" in str(results[1])
    [message] = await receive_all(sqs, url, 1)
    assert json.loads(message["Body"]) == {"ok": 1}


async def test_large_bodies_split_into_batches_under_the_limit(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    counter = CallCounter()
    body = "x" * 200_000
    async with SQSPublisher(url, session=counter.session(), **client_options) as publisher:
        await asyncio.gather(*(publisher.publish(body) for _ in range(3)))
    assert counter.count("SendMessageBatch") == 3
    assert len(await receive_all(sqs, url, 3)) == 3


async def test_missing_queue(client_options: dict[str, Any]) -> None:
    async with SQSPublisher("loafer-sqs-no-such-queue", **client_options) as publisher:
        with pytest.raises(ConfigurationError, match="does not exist"):
            await publisher.publish("x")


def test_encode_body() -> None:
    assert encode_body("text") == "text"
    assert encode_body("é".encode()) == "é"
    assert encode_body({"a": 1}) == '{"a": 1}'
    with pytest.raises(ValueError, match="UTF-8"):
        encode_body(b"\xff\xfe")
    with pytest.raises(ValueError, match="empty"):
        encode_body("")


def test_message_attributes() -> None:
    assert message_attributes({"flag": True, "f": 1.5}) == {
        "flag": {"DataType": "String", "StringValue": "true"},
        "f": {"DataType": "Number", "StringValue": "1.5"},
    }
    raw = {"DataType": "String.custom", "StringValue": "v"}
    assert message_attributes({"c": raw}) == {"c": raw}


async def test_sns_publisher_by_topic_name(
    sqs: Any, sns: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    from loafer_sqs import SNSPublisher

    url = await make_queue()
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
        "QueueArn"
    ]
    name = f"loafer-topic-{url.rsplit('-', 1)[-1]}"
    topic_arn = (await sns.create_topic(Name=name))["TopicArn"]
    try:
        await sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        async with SNSPublisher(name, **client_options) as publisher:
            await asyncio.gather(*(publisher.publish({"i": i}) for i in range(12)))
            with pytest.raises(ConfigurationError, match="does not exist"):
                await publisher.publish("x", topic="loafer-no-such-topic")
        messages = await receive_all(sqs, url, 12)
        assert sorted(json.loads(m["Body"])["i"] for m in messages) == list(range(12))
    finally:
        await sns.delete_topic(TopicArn=topic_arn)
