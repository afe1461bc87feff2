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


# -- handlers: return values, DeleteMessage, class-based handlers ---------------------------


async def test_handler_return_values_decide_the_acknowledgement(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    """ "By returning True the message will be acknowledged (deleted)"; False does not
    acknowledge it (it comes back). On purpose: None acknowledges too (Loafer never
    acknowledged it, so such messages came back for ever)."""
    url = await make_queue()
    await send_bodies(sqs, url, [json.dumps({"kind": k}) for k in ("true", "none", "false")])
    calls: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def handler(message: Any, metadata: Any) -> Any:
        receives = int(metadata["Attributes"]["ApproximateReceiveCount"])
        calls.append((message["kind"], receives))
        if len(calls) == 4:
            done.set()
        if message["kind"] == "true":
            return True
        if message["kind"] == "none":
            return None
        return receives > 1  # False the first time: not deleted, delivered again

    options = {**WAIT, "retry_visibility": 0, **client_options}
    await run_until([SQSRoute(url, options, handler=handler, retry=None)], done)
    assert sorted(calls) == [("false", 1), ("false", 2), ("none", 1), ("true", 1)]
    await wait_for_counts(sqs, url, (0, 0), 10)


@pytest.mark.parametrize("sync", [False, True])
async def test_delete_message_acknowledges_even_inside_except_exception(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any], sync: bool
) -> None:
    """ "Another way to acknowledge messages inside a handler is to raise DeleteMessage";
    as in olist-loafer 7.0 it is not an Exception, so a generic ``except Exception`` in
    the handler does not swallow it. Sync handlers "run in a thread"."""
    url = await make_queue()
    await send_bodies(sqs, url, [json.dumps({"n": 1})])
    ran = asyncio.Event()
    loop = asyncio.get_running_loop()

    def work() -> bool:
        loop.call_soon_threadsafe(ran.set)
        try:
            raise DeleteMessage()
        except Exception:
            return False  # never reached: the message would stay

    if sync:
        handler: Any = lambda message, metadata: work()  # noqa: E731
    else:

        async def handler(message: Any, metadata: Any) -> bool:
            return work()

    async with LoaferManager([SQSRoute(url, {**WAIT, **client_options}, handler=handler)]):
        await asyncio.wait_for(ran.wait(), 15)
        await wait_for_counts(sqs, url, (0, 0), 10)


async def test_class_based_handler_handle_and_stop(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    """ "The class should implement a handle coroutine/method"; "stop is optional and will
    be called before loafer shutdown"."""
    url = await make_queue()
    await send_bodies(sqs, url, [json.dumps({"n": 1})])
    done = asyncio.Event()

    class MyHandler:
        def __init__(self) -> None:
            self.seen: list[Any] = []
            self.stopped = 0

        async def handle(self, message: Any, *args: Any) -> bool:
            self.seen.append((message, args))
            done.set()
            return True

        def stop(self) -> None:
            self.stopped += 1

    handler = MyHandler()
    await run_until([SQSRoute(url, {**WAIT, **client_options}, handler=handler)], done)
    [(message, args)] = handler.seen
    assert message == {"n": 1} and args[0]["MessageId"]  # (message, metadata)
    assert handler.stopped == 1
    await wait_for_counts(sqs, url, (0, 0), 10)


# -- error handlers -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["exc_type, exc, message", "exc_info, message", "sync"])
async def test_error_handler_signatures_and_return_values(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any], shape: str
) -> None:
    """``async def custom_error_handler(exc_type, exc, message)`` (the documentation),
    ``(exc_info, message)`` (Loafer's code), or a plain function; "True means acknowledge
    it, False will only ignore the message"."""
    url = await make_queue()
    await send_bodies(sqs, url, [json.dumps({"verdict": v}) for v in ("delete", "keep")])
    seen: list[tuple[Any, str, int]] = []
    done = asyncio.Event()

    async def handler(message: Any, metadata: Any) -> bool:
        raise KeyError(message["verdict"])

    def decide(exc_type: Any, exc: BaseException, message: Any) -> bool:
        receives = int(message["Attributes"]["ApproximateReceiveCount"])
        verdict = json.loads(message["Body"])["verdict"]  # the raw message, Body intact
        seen.append((exc_type, verdict, receives))
        if len(seen) == 3:
            done.set()
        return verdict == "delete" or receives > 1

    error_handler: Any
    if shape == "exc_type, exc, message":

        async def error_handler(exc_type: Any, exc: Any, message: Any) -> bool:
            return decide(exc_type, exc, message)

    elif shape == "exc_info, message":

        async def error_handler(exc_info: Any, message: Any) -> bool:
            assert exc_info[2] is not None  # (type, value, traceback)
            return decide(exc_info[0], exc_info[1], message)

    else:
        error_handler = decide

    options = {**WAIT, "retry_visibility": 0, **client_options}
    route = SQSRoute(url, options, handler=handler, error_handler=error_handler, retry=None)
    await run_until([route], done)
    assert sorted(seen, key=lambda s: (s[1], s[2])) == [
        (KeyError, "delete", 1),
        (KeyError, "keep", 1),
        (KeyError, "keep", 2),  # False the first time: the message came back
    ]
    await wait_for_counts(sqs, url, (0, 0), 10)


# -- message translators: content and metadata --------------------------------------------


async def test_sqs_translator_content_and_metadata(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    """SQSRoute "expects json format messages": content is the decoded body, metadata the
    SQS message (MessageId, Attributes, MessageAttributes...) without ``Body``."""
    url = await make_queue()
    await sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps({"key": True}),
        MessageAttributes={"source": {"DataType": "String", "StringValue": "api"}},
    )
    got: list[tuple[Any, Any]] = []
    done = asyncio.Event()

    async def handler(message: Any, metadata: Any) -> bool:
        got.append((message, metadata))
        done.set()
        return True

    await run_until([SQSRoute(url, {**WAIT, **client_options}, handler=handler)], done)
    [(content, metadata)] = got
    assert content == {"key": True}
    assert metadata["MessageId"] and "ReceiptHandle" in metadata
    assert metadata["MessageAttributes"]["source"]["StringValue"] == "api"
    assert "Body" not in metadata


async def test_custom_translator_metadata_and_empty_content(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    """A translator returns ``{'content': ..., 'metadata': {...}}``: both reach the
    handler; "if processed_message is None (or empty) the message will cause ValueError",
    which goes to the error handler."""
    url = await make_queue()
    await send_bodies(sqs, url, ["7", "0"])

    class IntTranslator:
        def translate(self, message: Any) -> dict[str, Any]:
            return {"content": int(message["Body"]), "metadata": {"translated": True}}

    handled: list[tuple[Any, Any]] = []
    errors: list[type[BaseException]] = []
    done = asyncio.Event()

    async def handler(message: Any, metadata: Any) -> bool:
        handled.append((message, metadata["translated"]))
        if handled and errors:
            done.set()
        return True

    async def error_handler(exc_type: Any, exc: Any, message: Any) -> bool:
        errors.append(exc_type)
        if handled and errors:
            done.set()
        return True

    route = SQSRoute(
        url,
        {**WAIT, **client_options},
        handler=handler,
        error_handler=error_handler,
        message_translator=IntTranslator(),
    )
    await run_until([route], done)
    assert handled == [(7, True)]
    assert len(errors) == 1 and issubclass(errors[0], ValueError)  # content 0 is empty


async def test_sns_queue_route_content_and_metadata(
    sqs: Any, make_queue: MakeQueue, topic: tuple[str, str], client_options: dict[str, Any]
) -> None:
    """SNSQueueRoute: a queue subscribed to a topic; content is the JSON ``Message``,
    metadata the envelope (TopicArn, Subject, Timestamp, ...) without ``Message``."""
    arn, subscribed = topic
    async with SNSHandler(arn, **client_options) as publisher:
        await publisher.publish({"order": 5})
    got: list[tuple[Any, Any]] = []
    done = asyncio.Event()

    async def handler(message: Any, metadata: Any) -> bool:
        got.append((message, metadata))
        done.set()
        return True

    await run_until([SNSQueueRoute(subscribed, {**WAIT, **client_options}, handler=handler)], done)
    [(content, metadata)] = got
    assert content == {"order": 5}
    assert metadata["TopicArn"] == arn and metadata["Type"] == "Notification"
    assert "Message" not in metadata


# -- SQSRoute / SNSQueueRoute options -----------------------------------------------------


def test_route_options_as_loafer_documented(client_options: dict[str, Any]) -> None:
    """``SQSRoute('my-queue1', handler=..., name='route1')``; the name defaults to the
    queue; provider options (``options``, ``endpoint_url``, ``use_ssl``) in the second
    argument; a string where the translator belongs is refused."""

    async def handler(message: Any, metadata: Any) -> bool:
        return True

    assert SQSRoute("my-queue1", handler=handler, name="route1").name == "route1"
    route = SNSQueueRoute(
        "my-queue2",
        {"use_ssl": False, "options": {"WaitTimeSeconds": 4}, **client_options},
        handler=handler,
    )
    assert route.name == "my-queue2"
    with pytest.raises(ConfigurationError, match="translator"):
        SQSRoute("q", handler=handler, message_translator="loafer_sqs:SQSMessageTranslator")
