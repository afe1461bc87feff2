"""The loafer-core conformance kit, run against PubSubProvider on the Pub/Sub emulator."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import ClassVar

import pytest

from loafer_core.provider import Capabilities, Provider, Support
from loafer_core.testing import ProviderContract
from loafer_pubsub import PubSubProvider
from tests.loafer_pubsub.conftest import PROJECT, PubSubAdmin

pytestmark = pytest.mark.pubsub

#: The subscriptions' ack deadline: short, for the kit's lease tests (the emulator takes
#: less than the real service's 10 s minimum).
ACK_DEADLINE = 2


def _provider(queue: str, host: str) -> PubSubProvider:
    return PubSubProvider(
        queue,
        project=PROJECT,
        emulator_host=host,
        dead_letter_topic=f"{queue}-dead",
        poll_timeout=1.0,
    )


class TestPubSubContract(ProviderContract):
    """Every capability PubSubProvider claims with a dead-letter topic is exercised."""

    capabilities: ClassVar[Capabilities] = _provider("kit", "127.0.0.1:8085").capabilities
    queue_prefix: ClassVar[str] = "loafer-contract-pubsub"
    # an empty message needs an attribute: put() adds one
    supports_empty_body: ClassVar[bool] = True
    # below the 2 s ack deadline: what close gives back must not be left to it
    given_back_within: ClassVar[float] = 1.5
    duplicate_window: ClassVar[float] = 1.0
    redelivery_timeout: ClassVar[float] = 10.0

    @pytest.fixture(autouse=True)
    def _broker(self, pubsub_emulator: str) -> None:
        self.host = pubsub_emulator
        self.seen_dead: dict[str, list[bytes]] = {}

    @contextlib.asynccontextmanager
    async def _admin(self) -> AsyncIterator[PubSubAdmin]:
        admin = PubSubAdmin(self.host)
        try:
            yield admin
        finally:
            admin.created.clear()  # keep what was made: delete_queue removes it
            await admin.cleanup()

    async def make_provider(self, queue: str) -> Provider:
        return _provider(queue, self.host)

    async def create_queue(self, queue: str) -> None:
        async with self._admin() as admin:
            # the emulator's ordered subscriptions fail every pull (500) once their policy
            # forwards a message: 100 attempts are never reached here
            await admin.queue(
                queue, ack_deadline=ACK_DEADLINE, ordering=True, max_delivery_attempts=100
            )

    async def delete_queue(self, queue: str) -> None:
        async with self._admin() as admin:
            for path in (
                f"subscriptions/{queue}",
                f"subscriptions/{queue}-dead",
                f"topics/{queue}",
                f"topics/{queue}-dead",
            ):
                with contextlib.suppress(AssertionError):
                    await admin.call("DELETE", path)

    async def put(self, queue: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        if not body and not headers:
            headers = {"x-test-empty": "1"}  # Pub/Sub refuses a message with neither
        async with self._admin() as admin:
            await admin.put(queue, body, headers)

    async def put_many(self, queue: str, bodies: Sequence[bytes]) -> None:
        async with self._admin() as admin:
            await admin.put_many(queue, bodies)

    async def put_keyed(self, queue: str, body: bytes, key: str) -> None:
        async with self._admin() as admin:
            await admin.put(queue, body, key=key)

    async def dead_letters(self, queue: str) -> list[bytes] | None:
        """Every body that reached the dead-letter topic so far (read through its keeping
        subscription, acknowledged, remembered)."""
        async with self._admin() as admin:
            seen = self.seen_dead.setdefault(queue, [])
            seen.extend(await admin.bodies(f"{queue}-dead"))
            return list(seen)


def test_declared_capabilities_are_what_pubsub_does() -> None:
    """NATIVE where Pub/Sub does it, EMULATED dead-lettering, RELEASE counted."""
    caps = _provider("s-name", "127.0.0.1:8085").capabilities
    assert caps.delayed_retry is Support.NATIVE
    assert caps.attempt_count is Support.NATIVE
    assert caps.lease_extension is Support.NATIVE
    assert caps.ordering_keys is Support.NATIVE
    assert caps.dead_letter is Support.EMULATED
    assert caps.release_uncounted is Support.NONE
    assert caps.retry_waits is Support.NONE
    assert caps.max_retry_delay == 600.0
    bare = PubSubProvider("s-name", project=PROJECT).capabilities
    assert bare.dead_letter is Support.NONE
    assert bare.attempt_count is Support.NONE
