"""The embedded broker passes the conformance kit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.provider import Provider
from loafer_core.testing import Capabilities, ProviderContract

pytestmark = pytest.mark.memory


class TestMemoryContract(ProviderContract):
    capabilities = MemoryProvider(MemoryBroker(), "probe").capabilities
    timeout = 20.0
    redelivery_timeout = 5.0
    given_back_within = 0.8  # below the 1 s lease: nothing held may be left to it

    broker: MemoryBroker

    async def create_queue(self, queue: str) -> None:
        self.broker = MemoryBroker()
        self.broker.declare(queue, lease=1.0)  # short, so the lease-extension test is quick

    async def make_provider(self, queue: str) -> Provider:
        return MemoryProvider(self.broker, queue, wait=0.5)

    async def put(self, queue: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.broker.publish(queue, body, headers=headers)

    async def put_many(self, queue: str, bodies: Sequence[bytes]) -> None:
        self.broker.publish_many(queue, list(bodies))

    async def put_keyed(self, queue: str, body: bytes, key: str) -> None:
        self.broker.publish(queue, body, ordering_key=key)

    async def dead_letters(self, queue: str) -> list[bytes] | None:
        return [m.body for m in self.broker.dead_letters(queue)]


def test_capabilities_are_all_native() -> None:
    caps = TestMemoryContract.capabilities
    assert isinstance(caps, Capabilities)
    assert caps.delayed_retry and caps.dead_letter and caps.attempt_count
    assert caps.release_uncounted and caps.ordering_keys and caps.lease_extension


@pytest.mark.parametrize(
    ("declared", "named"),
    [
        (Capabilities(delayed_retry=True, dead_letter=True), "attempt_count: declared NONE"),
        (
            Capabilities(
                delayed_retry=True,
                dead_letter=True,
                attempt_count=True,
                release_uncounted=True,
                ordering_keys=True,
                lease_extension=True,
            ),
            None,
        ),
    ],
)
def test_the_kit_checks_a_declaration_against_the_provider(
    declared: Capabilities, named: str | None
) -> None:
    """A class claiming less (or more) than its provider does fails the kit (it used to
    trust the declaration and skip the tests of what it left out)."""

    class Declared(TestMemoryContract):
        capabilities = declared

    kit = Declared()
    if named is None:
        kit.test_the_declared_capabilities_are_the_providers_own()
        return
    with pytest.raises(AssertionError, match=named):
        kit.test_the_declared_capabilities_are_the_providers_own()
