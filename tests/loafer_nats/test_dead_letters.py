"""The dead-letter kit on a real NATS JetStream: REJECT publishes the copy with the
common keys to the dead-letter subject; a replay publishes to the origin subject (acked,
with a Nats-Msg-Id JetStream de-duplicates), then deletes the dead letter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import nats
import nats.js.errors
import pytest
from nats.js import api
from nats.js.client import JetStreamContext

from loafer_core.deadletters import dead_letters_of
from loafer_core.errors import ConfigurationError
from loafer_core.provider import Provider
from loafer_core.testing import DeadLetterContract
from loafer_nats import NATSProvider

pytestmark = pytest.mark.nats


class TestNATSDeadLetters(DeadLetterContract):
    queue_prefix = "loafer-dlq-nats"

    @pytest.fixture(autouse=True)
    def _broker(self, nats_url: str) -> None:
        self.url = nats_url

    @asynccontextmanager
    async def _js(self) -> AsyncIterator[JetStreamContext]:
        nc = await nats.connect(self.url, name="loafer-test-dlq")
        try:
            yield nc.jetstream(timeout=10)
        finally:
            await nc.close()

    async def make_provider(self, queue: str) -> Provider:
        return NATSProvider(
            queue,
            url=self.url,
            consumer="work",
            dead_letter_subject=f"dead.{queue}",
            poll_timeout=0.5,
        )

    async def create_queue(self, queue: str) -> None:
        async with self._js() as js:
            await js.add_stream(
                api.StreamConfig(
                    name=queue, subjects=[f"{queue}.>"], retention=api.RetentionPolicy.WORK_QUEUE
                )
            )
            await js.add_consumer(
                queue, api.ConsumerConfig(durable_name="work", ack_policy=api.AckPolicy.EXPLICIT)
            )
            await js.add_stream(api.StreamConfig(name=f"{queue}-dead", subjects=[f"dead.{queue}"]))

    async def delete_queue(self, queue: str) -> None:
        async with self._js() as js:
            for name in (queue, f"{queue}-dead"):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_stream(name)

    async def put(self, queue: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        async with self._js() as js:
            await js.publish(f"{queue}.in", body, headers=dict(headers) if headers else None)


def test_no_store_without_a_dead_letter_subject() -> None:
    with pytest.raises(ConfigurationError, match="no dead_letter_subject"):
        dead_letters_of(NATSProvider("s", url="nats://127.0.0.1:4222", consumer="work"))
