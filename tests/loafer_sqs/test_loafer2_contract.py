"""Loafer 2.x's public contract, run against moto through loafer-core's successors.

Written by us from Loafer 2.x's documentation (handlers, error handlers, message
translators, routes, generic handlers, exceptions; olist-loafer 6.x/7.0 where it extended
them): each test says which documented behaviour it checks. What loafer-core changed on
purpose (docs/migrating.md, "What behaves differently") is asserted as the new behaviour
and marked so.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from loafer_core import DeleteMessage, LoaferManager, StringMessageTranslator
from loafer_core.errors import ConfigurationError, ProviderError
from loafer_sqs import SNSHandler, SNSQueueRoute, SQSHandler, SQSRoute
from tests.loafer_sqs.conftest import MakeQueue, send_bodies, wait_for_counts

pytestmark = pytest.mark.sqs

WAIT = {"options": {"WaitTimeSeconds": 1}}


async def receive_bodies(sqs: Any, url: str, count: int, timeout: float = 15) -> list[str]:
    """Read (and delete) ``count`` messages from ``url``; fail after ``timeout`` seconds."""
    bodies: list[str] = []
    async with asyncio.timeout(timeout):
        while len(bodies) < count:
            response = await sqs.receive_message(
                QueueUrl=url, WaitTimeSeconds=1, MaxNumberOfMessages=10
            )
            for message in response.get("Messages", []):
                bodies.append(message["Body"])
                await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


async def run_until(routes: list[Any], done: asyncio.Event, timeout: float = 20) -> None:
    """Run ``routes`` with Loafer's manager until ``done`` is set (bounded)."""
    async with LoaferManager(routes):
        await asyncio.wait_for(done.wait(), timeout)


@pytest.fixture
async def topic(sns: Any, sqs: Any, make_queue: MakeQueue) -> AsyncIterator[tuple[str, str]]:
    """``(topic_arn, subscribed_queue_url)``: an SNS topic with an SQS queue subscribed
    (SNS's envelope, no raw delivery)."""
    url = await make_queue()
    topic = await sns.create_topic(Name=f"loafer2-{url.rsplit('-', 1)[-1]}")
    arn = topic["TopicArn"]
    queue_arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    await sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
    try:
        yield arn, url
    finally:
        await sns.delete_topic(TopicArn=arn)


# -- generic handlers (loafer.ext.aws.handlers) -------------------------------------------


async def test_sqs_handler_forwards_each_message_json_encoded(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    """ "A handler that publishes messages to a SQS queue": ``SQSHandler('my-queue')``,
    json-encoding the message by default; the source message is deleted."""
    source, destination = await make_queue(), await make_queue()
    contents = [{"n": i, "text": f"item {i}"} for i in range(3)]
    await send_bodies(sqs, source, [json.dumps(c) for c in contents])
    handler = SQSHandler(destination.rsplit("/", 1)[-1], **client_options)

    async with LoaferManager([SQSRoute(source, {**WAIT, **client_options}, handler=handler)]):
        bodies = await receive_bodies(sqs, destination, len(contents))
        await wait_for_counts(sqs, source, (0, 0), 10)

    assert sorted(json.loads(b)["n"] for b in bodies) == [0, 1, 2]
    assert sorted(bodies) == sorted(json.dumps(c) for c in contents)
    # the manager opened the handler's publisher and closed it after the drain
    with pytest.raises(ProviderError, match="closed"):
        await handler.publish({"late": True})


async def test_sqs_handler_subclass_with_queue_name_and_no_encoder(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    """The documented subclass: ``queue_name`` as a class attribute, and
    ``await self.publish(text, encoder=None)`` sending the text as it is."""
    source, destination = await make_queue(), await make_queue()
    await send_bodies(sqs, source, [json.dumps({"text": "hello"})])

    class MyHandler(SQSHandler):
        queue_name = destination  # a queue URL works too

        async def handle(self, message: Any, *args: Any) -> bool:
            return await self.publish(message["text"], encoder=None)

    async with MyHandler(**client_options) as handler:
        assert handler.queue_name == destination
        async with LoaferManager([SQSRoute(source, {**WAIT, **client_options}, handler=handler)]):
            assert await receive_bodies(sqs, destination, 1) == ["hello"]


async def test_sns_handler_publishes_to_the_topic(
    sqs: Any, make_queue: MakeQueue, topic: tuple[str, str], client_options: dict[str, Any]
) -> None:
    """ "A handler that publishes messages to a SNS topic", by ARN or by name; a queue
    subscribed to the topic gets the json-encoded message as the envelope's Message."""
    arn, subscribed = topic
    source = await make_queue()
    await send_bodies(sqs, source, [json.dumps({"order": 1}), json.dumps({"order": 2})])
    by_arn = SNSHandler(arn, **client_options)

    class ByName(SNSHandler):
        topic = arn.rsplit(":", 1)[-1]

    received: list[Any] = []
    done = asyncio.Event()

    async def collect(message: Any, metadata: Any) -> bool:
        received.append((message, metadata["TopicArn"]))
        if len(received) == 3:
            done.set()
        return True

    routes = [
        SQSRoute(source, {**WAIT, **client_options}, handler=by_arn),
        SNSQueueRoute(subscribed, {**WAIT, **client_options}, handler=collect),
    ]
    async with ByName(**client_options) as by_name:
        assert await by_name.handle({"order": 3}, {}) is True
        await run_until(routes, done)
    assert sorted(m["order"] for m, _ in received) == [1, 2, 3]
    assert {t for _, t in received} == {arn}


async def test_generic_handlers_say_what_is_missing() -> None:
    """``publish`` raises ValueError without a queue name / topic (the attribute "is
    mandatory")."""
    with pytest.raises(ValueError, match="SQSHandler: missing queue_name attribute"):
        await SQSHandler(region_name="us-east-1").publish({"x": 1})
    with pytest.raises(ValueError, match="SNSHandler: missing topic attribute"):
        await SNSHandler(region_name="us-east-1").publish({"x": 1})
    with pytest.raises(ConfigurationError, match=r"client=.*not supported"):
        SQSHandler("q", client=object())
    assert str(SQSHandler("q", region_name="us-east-1")) == "<SQSHandler: q>"


# -- message translators (loafer.message_translators) -------------------------------------


def test_string_message_translator() -> None:
    """``StringMessageTranslator``: ``{'content': str(message), 'metadata': {}}``; bytes
    are decoded (on purpose: Loafer's ``str(b"...")`` gave ``"b'...'"``)."""
    translator = StringMessageTranslator()
    assert translator.translate("text") == {"content": "text", "metadata": {}}
    assert translator.translate(42) == {"content": "42", "metadata": {}}
    assert translator.translate({"Body": "x"}) == {"content": "{'Body': 'x'}", "metadata": {}}
    assert translator.translate("café".encode()) == {"content": "café", "metadata": {}}


async def test_string_message_translator_on_an_sqs_route(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    """A custom translator on ``SQSRoute(..., message_translator=...)`` receives the raw
    SQS message; StringMessageTranslator makes it a string, as Loafer's did."""
    url = await make_queue()
    await send_bodies(sqs, url, ["plain body"])
    got: list[Any] = []
    done = asyncio.Event()

    def handler(message: Any, metadata: Any) -> bool:  # a sync handler: run in a thread
        got.append((message, metadata))
        done.set()
        raise DeleteMessage()  # "another way to acknowledge messages"

    route = SQSRoute(
        url,
        {**WAIT, **client_options},
        handler=handler,
        message_translator=StringMessageTranslator(),
    )
    await run_until([route], done)
    [(content, metadata)] = got
    assert isinstance(content, str)
    assert "'Body': 'plain body'" in content
    # on purpose: the provider's metadata is merged under the translator's (Loafer: {})
    assert metadata["message_id"] and "Body" not in metadata
    await wait_for_counts(sqs, url, (0, 0), 10)


# -- SNSQueueRoute: the envelope ------------------------------------------------------------


async def test_sns_queue_route_unwraps_a_loafer_2_envelope_without_type_or_topic(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    """``SNSQueueRoute`` unwraps ``{"Message": "..."}`` as Loafer 2.x's SNSMessageTranslator
    did (users' tests send such bodies straight to the queue); an object that is clearly
    not an envelope (a key SNS never writes) reaches the handler whole."""
    url = await make_queue()
    await send_bodies(
        sqs,
        url,
        [
            json.dumps({"Message": json.dumps({"order": 1}), "Timestamp": "t"}),
            json.dumps({"Message": "a note", "order": 2}),
        ],
    )
    got: list[tuple[Any, Any]] = []
    done = asyncio.Event()

    async def handler(message: Any, metadata: Any) -> bool:
        got.append((message, metadata))
        if len(got) == 2:
            done.set()
        return True

    await run_until([SNSQueueRoute(url, {**WAIT, **client_options}, handler=handler)], done)
    by_order = {m["order"]: (m, md) for m, md in got}
    assert by_order[1][0] == {"order": 1}
    assert by_order[1][1]["Timestamp"] == "t"  # the envelope's fields are the metadata
    assert by_order[2][0] == {"Message": "a note", "order": 2}
    await wait_for_counts(sqs, url, (0, 0), 10)
