"""loafer-core's publisher conformance kit, run against SQSPublisher and SNSPublisher on
moto (an SNS topic is read through an SQS queue subscribed with raw delivery)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import pytest

from loafer_core.testing import Arrived, PublisherContract
from loafer_sqs import SNSPublisher, SQSPublisher

pytestmark = pytest.mark.sqs

#: Over the 256 KiB of SQS and SNS: moto's SNS refuses it (its SQS takes it).
TOO_LARGE = "x" * (256 * 1024 + 1)


class TestSQSPublisherContract(PublisherContract):
    destination_prefix: ClassVar[str] = "loafer-pub-contract-sqs"

    options: dict[str, Any]

    @pytest.fixture(autouse=True)
    def _client_options(self, client_options: dict[str, Any]) -> None:
        self.options = client_options

    @contextlib.asynccontextmanager
    async def _client(self, service: str = "sqs") -> AsyncIterator[Any]:
        from aiobotocore.session import get_session

        async with get_session().create_client(service, **self.options) as client:
            yield client

    async def make_publisher(self, destination: str) -> Any:
        return SQSPublisher(destination, **self.options)

    async def create_destination(self, destination: str) -> None:
        async with self._client() as sqs:
            await sqs.create_queue(QueueName=destination)

    async def delete_destination(self, destination: str) -> None:
        async with self._client() as sqs:
            with contextlib.suppress(Exception):
                url = (await sqs.get_queue_url(QueueName=destination))["QueueUrl"]
                await sqs.delete_queue(QueueUrl=url)

    async def take(self, destination: str) -> Sequence[Arrived]:
        out: list[Arrived] = []
        async with self._client() as sqs:
            url = (await sqs.get_queue_url(QueueName=destination))["QueueUrl"]
            while True:
                response = await sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
                )
                messages = response.get("Messages", [])
                if not messages:
                    return out
                for message in messages:
                    attributes = message.get("MessageAttributes") or {}
                    headers = {k: v.get("StringValue") for k, v in attributes.items()}
                    out.append(Arrived(message["Body"].encode("utf-8"), headers))
                    await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def test_a_refused_publish_raises_publish_refused(self) -> None:
        pytest.skip(
            "moto's SQS refuses no message: it takes bodies over 256 KiB, invalid characters "
            "and empty attributes (real SQS refuses each)"
        )

    async def make_publisher_with_secret(self, destination: str) -> tuple[Any, str]:
        secret = "s3cret-aws-secret-access-key"
        options = {
            **self.options,
            "aws_secret_access_key": secret,
            "aws_session_token": f"token-{secret}",
            "endpoint_url": "http://127.0.0.1:9",  # nothing listens: the call fails
        }
        return SQSPublisher(destination, **options), secret


class TestSNSPublisherContract(TestSQSPublisherContract):
    destination_prefix: ClassVar[str] = "loafer-pub-contract-sns"
    refused_body: ClassVar[Any] = TOO_LARGE

    async def make_refusing_publisher(self, destination: str) -> Any:
        return await self.make_publisher(destination)

    def test_a_refused_publish_raises_publish_refused(self) -> None:
        """moto's SNS refuses a message over 256 KiB (InvalidParameter): PublishRefused,
        at once (not retried)."""
        PublisherContract.test_a_refused_publish_raises_publish_refused(self)

    async def _topic_arn(self, destination: str) -> str:
        async with self._client("sns") as sns:
            return str((await sns.create_topic(Name=destination))["TopicArn"])  # idempotent

    async def make_publisher(self, destination: str) -> Any:
        return SNSPublisher(await self._topic_arn(destination), **self.options)

    async def create_destination(self, destination: str) -> None:
        await super().create_destination(destination)  # the queue subscribed to the topic
        arn = await self._topic_arn(destination)
        async with self._client() as sqs, self._client("sns") as sns:
            url = (await sqs.get_queue_url(QueueName=destination))["QueueUrl"]
            queue_arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))[
                "Attributes"
            ]["QueueArn"]
            await sns.subscribe(
                TopicArn=arn,
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes={"RawMessageDelivery": "true"},
            )

    async def delete_destination(self, destination: str) -> None:
        async with self._client("sns") as sns:
            with contextlib.suppress(Exception):
                await sns.delete_topic(TopicArn=await self._topic_arn(destination))
        await super().delete_destination(destination)

    async def make_publisher_with_secret(self, destination: str) -> tuple[Any, str]:
        secret = "s3cret-aws-secret-access-key"
        options = {
            **self.options,
            "aws_secret_access_key": secret,
            "aws_session_token": f"token-{secret}",
            "endpoint_url": "http://127.0.0.1:9",
        }
        arn = f"arn:aws:sns:{options['region_name']}:123456789012:{destination}"
        return SNSPublisher(arn, **options), secret
