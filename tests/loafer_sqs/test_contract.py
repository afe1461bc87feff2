"""loafer-core's provider conformance kit, run against SQSProvider on moto.

SQS bodies are text: ``put`` sends UTF-8 bodies as they are, and bytes that are not
UTF-8 (the kit's bad-input case) as their Latin-1 reading, which is what such bytes
become when a producer forces them into an SQS string; the route must still hand them
to the error handler. SQS has no empty bodies (``supports_empty_body = False``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

import pytest

from loafer_core.provider import Capabilities, Provider, Support
from loafer_core.testing import ProviderContract
from loafer_core.translator import Translator
from loafer_sqs import SQSMessageTranslator, SQSProvider
from loafer_sqs.provider import MAX_VISIBILITY

pytestmark = pytest.mark.sqs


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("latin-1")


class TestSQSContract(ProviderContract):
    capabilities: ClassVar[Capabilities] = Capabilities(
        delayed_retry=Support.NATIVE,
        dead_letter=Support.EMULATED,
        attempt_count=Support.NATIVE,
        release_uncounted=Support.NONE,
        ordering_keys=Support.NONE,
        lease_extension=Support.NATIVE,
        max_retry_delay=float(MAX_VISIBILITY - 60),
    )
    supports_empty_body: ClassVar[bool] = False
    timeout: ClassVar[float] = 120.0
    #: RETRY() without a delay waits for the visibility timeout (2 s here).
    visibility: ClassVar[int] = 2
    #: moto's calls cost O(queue depth): 1,000 queued messages take about a minute, so
    #: the quick run uses 300 and the slow run the kit's 1,000.
    bulk_messages: ClassVar[int] = 300

    options: dict[str, Any]

    @pytest.fixture(autouse=True)
    def _client_options(self, client_options: dict[str, Any]) -> None:
        self.options = client_options

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[Any]:
        from aiobotocore.session import get_session

        async with get_session().create_client("sqs", **self.options) as client:
            yield client

    async def make_provider(self, queue: str) -> Provider:
        return SQSProvider(queue, {"WaitTimeSeconds": 1}, **self.options)

    async def create_queue(self, queue: str) -> None:
        async with self._client() as sqs:
            dead = await sqs.create_queue(QueueName=f"{queue}-dlq")
            arn = (
                await sqs.get_queue_attributes(
                    QueueUrl=dead["QueueUrl"], AttributeNames=["QueueArn"]
                )
            )["Attributes"]["QueueArn"]
            await sqs.create_queue(
                QueueName=queue,
                Attributes={
                    "VisibilityTimeout": str(self.visibility),
                    "RedrivePolicy": json.dumps(
                        {"deadLetterTargetArn": arn, "maxReceiveCount": 100}
                    ),
                },
            )

    async def delete_queue(self, queue: str) -> None:
        async with self._client() as sqs:
            for name in (queue, f"{queue}-dlq"):
                with contextlib.suppress(Exception):
                    url = (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
                    await sqs.delete_queue(QueueUrl=url)

    async def put(self, queue: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        async with self._client() as sqs:
            url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
            params: dict[str, Any] = {"QueueUrl": url, "MessageBody": _text(body)}
            if headers:
                params["MessageAttributes"] = {
                    k: {"DataType": "String", "StringValue": v} for k, v in headers.items()
                }
            await sqs.send_message(**params)

    async def put_many(self, queue: str, bodies: Sequence[bytes]) -> None:
        async with self._client() as sqs:
            url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
            for start in range(0, len(bodies), 10):
                chunk = bodies[start : start + 10]
                response = await sqs.send_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "MessageBody": _text(b)} for i, b in enumerate(chunk)],
                )
                assert not response.get("Failed"), response

    async def dead_letters(self, queue: str) -> list[bytes] | None:
        async with self._client() as sqs:
            url = (await sqs.get_queue_url(QueueName=f"{queue}-dlq"))["QueueUrl"]
            response = await sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0
            )
            return [m["Body"].encode("utf-8") for m in response.get("Messages", [])]

    def translator(self) -> Translator:
        return SQSMessageTranslator()

    @pytest.mark.slow
    def test_many_messages_none_lost_1000(self) -> None:
        self.bulk_messages = 1000
        # With 1,000 messages queued a moto call can take longer than the 2 s visibility
        # the other tests use (moto is O(depth)): deletes and lease extensions then come
        # after the message was received again, their receipt handles are invalid, and the
        # run never ends within the timeout. Real SQS answers in milliseconds; this test is
        # about none being lost, so it gets a visibility moto can keep up with.
        self.visibility = 30
        self.timeout = 240.0
        self.test_many_messages_none_lost()
