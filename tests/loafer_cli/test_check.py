"""``loafer check``: providers started (queue checked), capabilities checked, nothing
consumed; a non-zero exit on any problem."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from loafer_cli.check import check_route
from loafer_core import Capabilities, Route, Support
from loafer_core.memory import MemoryBroker, MemoryProvider
from tests.loafer_cli.runner import loafer
from tests.loafer_rabbit.conftest import RabbitAdmin

APP = textwrap.dedent(
    """
    import os

    from loafer_core import Route, RetryPolicy
    from loafer_rabbit import RabbitProvider


    async def handler(message, metadata):
        raise AssertionError("check must consume nothing")


    def rabbit(queue, **options):
        return RabbitProvider(queue, url=os.environ["RABBIT_URL"], **options)


    good = [Route(rabbit(os.environ["QUEUE"]), handler, name="good")]
    missing = good + [Route(rabbit(os.environ["QUEUE"] + "-missing"), handler, name="missing")]
    mismatch = [
        Route(
            rabbit(os.environ["QUEUE"], delayed_retry=False),
            handler,
            name="mismatch",
            retry=RetryPolicy(initial=1, maximum=10),
        )
    ]


    def amqp_good():
        from loafer_amqp import AMQPProvider

        provider = AMQPProvider(os.environ["AMQP_URL"], "/amq/queue/" + os.environ["QUEUE"])
        return [Route(provider, handler, name="amqp-good")]


    def amqp_attempts():
        from loafer_amqp import AMQPProvider

        provider = AMQPProvider(os.environ["AMQP_URL"], "/amq/queue/" + os.environ["QUEUE"])
        return [Route(provider, handler, name="attempts", max_attempts=3)]
    """
)


@pytest.fixture
async def queue_with_a_message(admin: RabbitAdmin) -> str:
    queue = await admin.declare()
    await admin.put(queue, json.dumps({"n": 1}).encode())
    return queue


async def _untouched(admin: RabbitAdmin, queue: str, count: int) -> None:
    """``queue`` still holds ``count`` messages, none of them delivered before."""
    assert await admin.count(queue) == count
    messages = await admin.drain(queue)
    assert len(messages) == count
    assert not any(m.redelivered for m in messages), "check took messages and gave them back"


def _check(tmp_path: Path, attr: str, env: dict[str, str]) -> tuple[int, str, str]:
    (tmp_path / "app.py").write_text(APP)
    done = loafer("check", f"app:{attr}", "--timeout", "15", cwd=tmp_path, env=env)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.rabbit
async def test_check_passes_on_a_good_target_and_consumes_nothing(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str, queue_with_a_message: str
) -> None:
    rc, out, err = _check(
        tmp_path, "good", {"QUEUE": queue_with_a_message, "RABBIT_URL": rabbit_url}
    )
    assert rc == 0, out + err
    assert "good" in out and "OK" in out
    await _untouched(admin, queue_with_a_message, 1)


@pytest.mark.amqp
async def test_check_on_amqp_passes_and_leaves_the_messages_untouched(
    tmp_path: Path, admin: RabbitAdmin, amqp_url: str, rabbit_url: str
) -> None:
    queue = await admin.declare()
    await admin.put_many(queue, [b"1", b"2", b"3"])
    rc, out, err = _check(
        tmp_path, "amqp_good", {"QUEUE": queue, "RABBIT_URL": rabbit_url, "AMQP_URL": amqp_url}
    )
    assert rc == 0, out + err
    assert "amqp-good" in out and "OK" in out
    await _untouched(admin, queue, 3)


@pytest.mark.rabbit
async def test_check_fails_on_a_missing_queue_naming_it(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str, queue_with_a_message: str
) -> None:
    rc, out, err = _check(
        tmp_path, "missing", {"QUEUE": queue_with_a_message, "RABBIT_URL": rabbit_url}
    )
    assert rc == 1, out + err
    assert "route 'missing'" in err
    assert f"{queue_with_a_message}-missing" in err
    assert "route 'good'" not in err  # the good route passed
    await _untouched(admin, queue_with_a_message, 1)
    assert not await admin.exists(f"{queue_with_a_message}-missing")


@pytest.mark.rabbit
async def test_check_fails_on_a_capability_mismatch(
    tmp_path: Path, rabbit_url: str, queue_with_a_message: str
) -> None:
    rc, out, err = _check(
        tmp_path, "mismatch", {"QUEUE": queue_with_a_message, "RABBIT_URL": rabbit_url}
    )
    assert rc == 1, out + err
    assert "route 'mismatch'" in err and "needs delayed retries" in err


@pytest.mark.amqp
async def test_check_fails_on_max_attempts_with_a_provider_that_cannot_count(
    tmp_path: Path, amqp_url: str, rabbit_url: str, queue_with_a_message: str
) -> None:
    rc, out, err = _check(
        tmp_path,
        "amqp_attempts",
        {"QUEUE": queue_with_a_message, "RABBIT_URL": rabbit_url, "AMQP_URL": amqp_url},
    )
    assert rc == 1, out + err
    assert "max_attempts=3 needs a provider that counts delivery attempts" in err


def test_check_of_a_bad_target_exits_78(tmp_path: Path) -> None:
    done = loafer("check", "nosuchmodule:routes", cwd=tmp_path)
    assert done.returncode == 78
    assert "cannot import module 'nosuchmodule'" in done.stderr


class _NoExtension(MemoryProvider):
    """A memory provider that cannot extend leases (as a broker without a heartbeat)."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, lease_extension=Support.NONE)


@pytest.mark.memory
@pytest.mark.parametrize(
    ("provider_class", "handler_timeout", "problem"),
    [(_NoExtension, 45.0, True), (_NoExtension, 20.0, False), (MemoryProvider, 45.0, False)],
)
async def test_a_handler_timeout_longer_than_an_unextended_lease_is_a_problem(
    provider_class: type[MemoryProvider], handler_timeout: float, problem: bool
) -> None:
    broker = MemoryBroker()
    broker.declare("q", lease=30)
    route = Route(provider_class(broker, "q"), lambda m, md: None, handler_timeout=handler_timeout)
    result = await check_route(route, timeout=5)
    if problem:
        assert not result.ok
        assert "handler_timeout 45s is longer than the lease" in result.problems[0]
    else:
        assert result.ok, result.problems


class _StartRefused(MemoryProvider):
    """A memory provider whose start would consume: check must verify it instead."""

    async def start(self, capacity: int) -> None:
        raise AssertionError("check started a Verifiable provider")


class _NotVerifiable:
    """A provider without ``verify``: check starts and closes it."""

    def __init__(self, inner: MemoryProvider) -> None:
        self.inner = inner
        self.calls: list[str] = []

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    async def start(self, capacity: int) -> None:
        self.calls.append("start")
        await self.inner.start(capacity)

    async def fetch(self, max_messages: int) -> list[Any]:
        raise AssertionError("check fetched")

    async def settle(self, delivery: Any, outcome: Any) -> None:
        raise AssertionError("check settled")

    async def close(self) -> None:
        self.calls.append("close")
        await self.inner.close()


@pytest.mark.memory
async def test_a_verifiable_provider_is_verified_not_started() -> None:
    broker = MemoryBroker()
    broker.declare("q")
    result = await check_route(Route(_StartRefused(broker, "q"), lambda m, md: None), timeout=5)
    assert result.ok, result.problems
    missing = await check_route(
        Route(_StartRefused(broker, "nope"), lambda m, md: None, name="nope"), timeout=5
    )
    assert missing.problems == (
        "memory queue 'nope' does not exist; declare it with "
        "broker.declare('nope') or publish to it first",
    )


@pytest.mark.memory
async def test_a_provider_without_verify_is_started_and_closed() -> None:
    broker = MemoryBroker()
    broker.declare("q")
    provider = _NotVerifiable(MemoryProvider(broker, "q"))
    result = await check_route(Route(provider, lambda m, md: None), timeout=5)
    assert result.ok, result.problems
    assert provider.calls == ["start", "close"]
