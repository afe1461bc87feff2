"""The loafer-core conformance kit, run against NATSProvider on a real NATS JetStream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import ClassVar

import nats
import nats.js.errors
import pytest
from nats.js import JetStreamContext, api

from loafer_core.provider import Capabilities, Provider, Support
from loafer_core.testing import ProviderContract
from loafer_nats import NATSProvider

pytestmark = pytest.mark.nats

#: Short enough for the kit's lease-extension test (a handler 2.5x the lease).
ACK_WAIT = 4.0


def _provider(stream: str, url: str) -> NATSProvider:
    return NATSProvider(
        stream, url=url, consumer="work", dead_letter_subject=f"dead.{stream}", poll_timeout=1.0
    )


class TestNATSContract(ProviderContract):
    """Every capability NATSProvider claims with a dead-letter subject is exercised."""

    capabilities: ClassVar[Capabilities] = _provider("s", "nats://127.0.0.1:4222").capabilities
    queue_prefix: ClassVar[str] = "loafer-contract-nats"
    # 1 MB: under the server's max_payload (1 MiB) with room for headers
    large_body_size: ClassVar[int] = 1_000_000
    supports_empty_body: ClassVar[bool] = True

    @pytest.fixture(autouse=True)
    def _broker(self, nats_url: str) -> None:
        self.url = nats_url

    @asynccontextmanager
    async def _js(self) -> AsyncIterator[JetStreamContext]:
        nc = await nats.connect(self.url, name="loafer-test-contract")
        try:
            yield nc.jetstream(timeout=10)
        finally:
            await nc.close()

    async def make_provider(self, queue: str) -> Provider:
        return _provider(queue, self.url)

    async def create_queue(self, queue: str) -> None:
        async with self._js() as js:
            await js.add_stream(
                api.StreamConfig(
                    name=queue, subjects=[f"{queue}.>"], retention=api.RetentionPolicy.WORK_QUEUE
                )
            )
            await js.add_consumer(
                queue,
                api.ConsumerConfig(
                    durable_name="work", ack_policy=api.AckPolicy.EXPLICIT, ack_wait=ACK_WAIT
                ),
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

    async def put_many(self, queue: str, bodies: Sequence[bytes]) -> None:
        async with self._js() as js:
            for start in range(0, len(bodies), 500):
                await asyncio.gather(
                    *(js.publish(f"{queue}.in", body) for body in bodies[start : start + 500])
                )

    async def dead_letters(self, queue: str) -> list[bytes] | None:
        """Every body stored in the dead-letter stream (read by sequence)."""
        async with self._js() as js:
            state = (await js.stream_info(f"{queue}-dead")).state
            if not state.messages:
                return []
            bodies = []
            for seq in range(state.first_seq, state.last_seq + 1):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    bodies.append((await js.get_msg(f"{queue}-dead", seq)).data or b"")
            return bodies


def test_declared_capabilities_are_what_nats_does() -> None:
    """NATIVE where JetStream does it, EMULATED dead-lettering, RELEASE counted."""
    caps = _provider("s", "nats://127.0.0.1:4222").capabilities
    assert caps.delayed_retry is Support.NATIVE
    assert caps.attempt_count is Support.NATIVE
    assert caps.lease_extension is Support.NATIVE
    assert caps.dead_letter is Support.EMULATED
    assert caps.release_uncounted is Support.NONE
    assert caps.ordering_keys is Support.NONE
    assert caps.retry_waits is Support.NONE
    bare = NATSProvider("s").capabilities
    assert bare.dead_letter is Support.NONE
