"""loafer-core's publisher conformance kit, run against NATSPublisher on a real NATS
JetStream (each destination a stream capturing ``<name>.>``; what arrived is read from
the stream by sequence)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import nats
import nats.js.errors
import pytest
from nats.js import JetStreamContext, api

from loafer_core.testing import Arrived, PublisherContract
from loafer_nats import NATSPublisher

pytestmark = pytest.mark.nats


class TestNATSPublisherContract(PublisherContract):
    destination_prefix: ClassVar[str] = "loafer-pub-contract-nats"

    @pytest.fixture(autouse=True)
    def _server(self, nats_url: str) -> None:
        self.url = nats_url
        self.read_up_to: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def _js(self) -> AsyncIterator[JetStreamContext]:
        client = await nats.connect(self.url, name="loafer-test-pub-contract")
        try:
            yield client.jetstream()
        finally:
            await client.close()

    async def make_publisher(self, destination: str) -> Any:
        return NATSPublisher(f"{destination}.in", url=self.url, stream=destination)

    async def create_destination(self, destination: str) -> None:
        async with self._js() as js:
            await js.add_stream(api.StreamConfig(name=destination, subjects=[f"{destination}.>"]))

    async def delete_destination(self, destination: str) -> None:
        async with self._js() as js:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(destination)

    async def take(self, destination: str) -> Sequence[Arrived]:
        out: list[Arrived] = []
        async with self._js() as js:
            last = (await js.stream_info(destination)).state.last_seq
            for seq in range(self.read_up_to.get(destination, 0) + 1, last + 1):
                message = await js.get_msg(destination, seq)
                out.append(Arrived(message.data or b"", dict(message.headers or {})))
            self.read_up_to[destination] = last
        return out

    async def make_refusing_publisher(self, destination: str) -> Any:
        # no stream captures the subject: JetStream answers the publish with an error
        return NATSPublisher(f"nowhere.{destination}", url=self.url)

    async def make_publisher_with_secret(self, destination: str) -> tuple[Any, str]:
        secret = "s3cret-nats-password"
        host = self.url.split("://", 1)[-1].rsplit("@", 1)[-1]
        publisher = NATSPublisher(
            f"{destination}.in",
            url=f"nats://loafer:{secret}@{host}",
            connect_timeout=5,
            connection_options={"token": f"token-{secret}", "max_reconnect_attempts": 0},
        )
        return publisher, secret
