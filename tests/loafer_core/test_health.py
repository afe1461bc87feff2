"""Route state and counters (Manager.status), the health endpoints over real HTTP, and
the status lines."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from loafer_core import ConfigurationError, Manager, ProviderError, Route
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.status import RouteState
from loafer_core.testing import eventually

pytestmark = pytest.mark.memory


def _get(port: int, path: str, method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
            return response.status, json.loads(body) if body else None
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


async def get(port: int, path: str, method: str = "GET") -> tuple[int, Any]:
    """A real HTTP request, from a thread (urllib blocks)."""
    return await asyncio.wait_for(asyncio.to_thread(_get, port, path, method), 10)


class GatedStart(MemoryProvider):
    """A provider whose start waits until the test opens the gate."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()

    async def start(self, capacity: int) -> None:
        await self.gate.wait()
        await super().start(capacity)


async def test_readiness_follows_the_routes_from_starting_to_draining() -> None:
    broker = MemoryBroker()
    broker.declare("q")
    provider = GatedStart(broker, "q", wait=0.05)
    in_handler = asyncio.Event()
    finish = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        in_handler.set()
        await finish.wait()
        return True

    manager = Manager(
        [Route(provider, handler, name="orders")],
        health_port=0,
        health_host="127.0.0.1",
        shutdown_timeout=10,
    )
    serving = asyncio.create_task(manager.serve())
    await eventually(lambda: manager.health is not None)
    assert manager.health is not None
    port = manager.health.port
    assert await get(port, "/livez") == (200, {"status": "ok"})
    code, body = await get(port, "/readyz")
    assert code == 503 and body["routes"] == {"orders": "starting"}
    provider.gate.set()
    await manager.wait_started()
    assert await get(port, "/readyz") == (200, {"status": "ready", "routes": {"orders": "running"}})
    broker.publish("q", "x")
    await asyncio.wait_for(in_handler.wait(), 10)
    manager.stop()
    await eventually(lambda: manager.status()[0].state is RouteState.DRAINING)
    code, body = await get(port, "/readyz")
    assert code == 503 and body["routes"] == {"orders": "draining"}
    assert (await get(port, "/livez"))[0] == 200  # alive while draining
    finish.set()
    await asyncio.wait_for(serving, 10)
    with pytest.raises(OSError):  # closed with the manager
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    [status] = manager.status()
    assert status.state is RouteState.STOPPED
    assert status.received == 1 and status.settled["ACCEPT"] == 1


async def test_status_counts_outcomes_and_errors_and_serves_them(caplog: Any) -> None:
    broker = MemoryBroker()
    for body in ("ok", "ok", "bad"):
        broker.publish("q", body)

    async def handler(content: str, metadata: Any) -> bool:
        if content == "bad":
            raise ValueError("bad input")
        return True

    def on_error(exc_type: Any, exc: Any, raw: Any) -> bool:
        return True  # accepted after counting

    manager = Manager(
        [Route(MemoryProvider(broker, "q", wait=0.05), handler, error_handler=on_error)],
        health_port=0,
        health_host="127.0.0.1",
        status_interval=0.1,
    )
    caplog.set_level(logging.INFO, logger="loafer_core.manager")
    async with manager:
        await manager.wait_started()
        await broker.wait_idle("q", timeout=10)
        assert manager.health is not None
        code, body = await get(manager.health.port, "/status")
        assert code == 200
        [route] = body["routes"]
        assert route["state"] == "running"
        assert route["received"] == 3 and route["settled"]["ACCEPT"] == 3
        assert route["message_errors"] == 1
        assert route["last_message_error"] == "ValueError: bad input"
        assert (await get(manager.health.port, "/nope"))[0] == 404
        assert (await get(manager.health.port, "/livez", "POST"))[0] == 405
        await eventually(lambda: "handled/s" in caplog.text)
    lines = [r.getMessage() for r in caplog.records if "received 3" in r.getMessage()]
    assert any("ACCEPT 3" in line and "last: ValueError: bad input" in line for line in lines)
    assert lines[-1].startswith(f"route {manager.routes[0].name!r}: stopped")  # the summary


async def test_states_for_failures() -> None:
    class Flaky(MemoryProvider):
        async def start(self, capacity: int) -> None:
            raise ProviderError("broker down")

    manager = Manager([Route(Flaky(MemoryBroker(), "q"), lambda c, m: True)])
    serving = asyncio.create_task(manager.serve())
    await eventually(lambda: manager.status()[0].failures >= 2)
    status = manager.status()[0]
    assert status.state is RouteState.BACKING_OFF and status.error == "ProviderError: broker down"
    assert not manager.ready
    manager.stop()
    await asyncio.wait_for(serving, 10)

    missing = Manager([Route(MemoryProvider(MemoryBroker(), "missing"), lambda c, m: True)])
    with pytest.raises(ConfigurationError):
        await asyncio.wait_for(missing.serve(), 10)
    [failed] = missing.status()
    assert failed.state is RouteState.FAILED and "missing" in (failed.error or "")


async def test_a_health_port_in_use_is_a_configuration_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        manager = Manager(
            [Route(MemoryProvider(MemoryBroker(), "q"), lambda c, m: True)],
            health_port=port,
            health_host="127.0.0.1",
        )
        with pytest.raises(ConfigurationError, match="choose another health port"):
            await asyncio.wait_for(manager.serve(), 10)
    with pytest.raises(ConfigurationError, match="health_port"):
        Manager([Route(MemoryProvider(MemoryBroker(), "q"), lambda c, m: True)], health_port=-1)


async def test_status_counts_fetch_and_settle_failures() -> None:
    broker = MemoryBroker()
    broker.publish("q", "x")

    class Failing(MemoryProvider):
        fetches = 0

        async def fetch(self, max_messages: int) -> Any:
            self.fetches += 1
            if self.fetches <= 2:
                raise ProviderError("fetch refused")
            return await super().fetch(max_messages)

        async def settle(self, delivery: Any, outcome: Any) -> None:
            raise ProviderError("settle refused")

    manager = Manager([Route(Failing(broker, "q", wait=0.05), lambda c, m: True)])
    async with manager:
        await manager.wait_started()
        await eventually(lambda: manager.status()[0].settle_failures >= 1, timeout=30)
        status = manager.status()[0]
    assert status.fetch_failures == 2
    assert status.settle_failures >= 1


async def test_services_start_before_the_routes_and_close_after_the_drain() -> None:
    events: list[str] = []
    broker = MemoryBroker()
    broker.declare("q")

    class Recorder:
        async def start(self) -> None:
            events.append(f"start, routes {manager.status()[0].state}")

        async def close(self) -> None:
            events.append(f"close, routes {manager.status()[0].state}")

    manager = Manager([Route(MemoryProvider(broker, "q"), lambda c, m: True)])
    manager.services.append(Recorder())
    async with manager:
        await manager.wait_started()
    assert events == ["start, routes starting", "close, routes stopped"]

    class Refusing:
        async def start(self) -> None:
            raise ConfigurationError("port taken")

        async def close(self) -> None:
            raise AssertionError("never started, never closed")

    refused = Manager([Route(MemoryProvider(broker, "q"), lambda c, m: True)])
    refused.services.append(Refusing())
    serving = asyncio.create_task(refused.serve())
    with pytest.raises(ConfigurationError, match="port taken"):
        await asyncio.wait_for(refused.wait_started(), 10)
    with pytest.raises(ConfigurationError, match="port taken"):
        await asyncio.wait_for(serving, 10)
    assert not refused.routes[0].has_run  # nothing ran: the routes can still be used
