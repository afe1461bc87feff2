"""The manager in a real process: signals, exit status, one iteration."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loafer_core import ConfigurationError, LoaferManager, Manager, Route
from loafer_core.memory import HISTORY, MemoryBroker, MemoryProvider
from loafer_core.outcome import Outcome, OutcomeKind
from loafer_core.provider import Delivery
from loafer_core.testing import run_until_idle

SERVICE = textwrap.dedent(
    """
    import asyncio, logging, sys, threading
    from loafer_core import Manager, Route
    from loafer_core.memory import HISTORY, MemoryBroker, MemoryProvider

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    broker = MemoryBroker(history=HISTORY)
    broker.publish_many("q", list(range(1, 11)))
    started = []
    gate = asyncio.Event()
    loops = []

    class Handler:
        async def handle(self, content, metadata):
            loops.append(asyncio.get_running_loop())
            started.append(content)
            if len(started) == 2:
                print("READY", flush=True)
            await gate.wait()
            return True

        def stop(self):
            print("STOPPED", flush=True)

    def on_stdin():
        if sys.stdin.readline().strip() == "go":
            loops[0].call_soon_threadsafe(gate.set)

    threading.Thread(target=on_stdin, daemon=True).start()
    route = Route(MemoryProvider(broker, "q", wait=0.1), Handler(), max_concurrency=2)
    manager = Manager([route], shutdown_timeout=float(sys.argv[1]))
    try:
        manager.run()
    finally:
        kinds = [s.outcome.kind.name for s in broker.settlements("q")]
        print("ACCEPT", kinds.count("ACCEPT"), "RELEASE", kinds.count("RELEASE"),
              "DEPTH", broker.depth("q"), "INFLIGHT", broker.in_flight("q"), flush=True)
    """
)


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    """Kill any service a failed test left running."""
    yield
    for proc in _started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    _started.clear()


_started: list[subprocess.Popen[str]] = []


def _start(tmp_path: Path, shutdown_timeout: float) -> subprocess.Popen[str]:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(shutdown_timeout)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _started.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    return proc


def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    proc = _start(tmp_path, 30)
    proc.send_signal(signal.SIGTERM)
    assert proc.stdin is not None and proc.stderr is not None
    while "SIGTERM received: draining" not in (line := proc.stderr.readline()):
        assert line, "the service ended without draining"
    proc.stdin.write("go\n")  # let the two in-flight handlers finish
    proc.stdin.flush()
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "STOPPED" in out
    assert "ACCEPT 2 RELEASE 0 DEPTH 8 INFLIGHT 0" in out


def test_second_signal_stops_now(tmp_path: Path) -> None:
    proc = _start(tmp_path, 30)
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    # signals of one kind are not queued: send the second once the first was handled
    while "SIGINT received: draining" not in (line := proc.stderr.readline()):
        assert line, "the service ended without draining"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "ACCEPT 0 RELEASE 2 DEPTH 10 INFLIGHT 0" in out
    assert "received again: stopping now" in err


STUCK_SYNC = textwrap.dedent(
    """
    import logging, sys, threading
    from loafer_core import Manager, Route
    from loafer_core.memory import HISTORY, MemoryBroker, MemoryProvider

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    broker = MemoryBroker(history=HISTORY)
    broker.publish("q", "stuck")

    def handler(content, metadata):  # a sync handler that never returns
        print("READY", flush=True)
        threading.Event().wait()

    try:
        Manager([Route(MemoryProvider(broker, "q", wait=0.1), handler)]).run()
    finally:
        kinds = [s.outcome.kind.name for s in broker.settlements("q")]
        print("RELEASE", kinds.count("RELEASE"), "INFLIGHT", broker.in_flight("q"), flush=True)
    """
)


def test_second_signal_exits_even_with_a_sync_handler_stuck_for_good(tmp_path: Path) -> None:
    script = tmp_path / "stuck.py"
    script.write_text(STUCK_SYNC)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _started.append(proc)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == "READY"
    proc.send_signal(signal.SIGTERM)
    while "SIGTERM received: draining" not in (line := proc.stderr.readline()):
        assert line, "the service ended without draining"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)  # its thread must not hold the process
    assert proc.returncode == 0, err
    assert "RELEASE 1 INFLIGHT 0" in out


def test_fatal_configuration_error_exits_non_zero(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text(
        textwrap.dedent(
            """
            from loafer_core import Manager, Route
            from loafer_core.memory import HISTORY, MemoryBroker, MemoryProvider
            Manager([Route(MemoryProvider(MemoryBroker(), "missing"), print)]).run()
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=20, check=False
    )
    assert proc.returncode != 0
    assert "memory queue 'missing' does not exist" in proc.stderr


def test_manager_configuration() -> None:
    broker = MemoryBroker(history=HISTORY)
    route = Route(MemoryProvider(broker, "q"), print)
    assert LoaferManager is Manager
    with pytest.raises(ConfigurationError, match="at least one route"):
        Manager([])
    with pytest.raises(ConfigurationError, match="not a Route"):
        Manager([route, "nope"])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="twice"):
        Manager([route, route])
    with pytest.raises(ConfigurationError, match="shutdown_timeout"):
        Manager([route], shutdown_timeout=-1)


def test_run_forever_false_blocks_for_one_iteration() -> None:
    broker = MemoryBroker(history=HISTORY)
    broker.publish_many("q", ["a", "b", "c"])
    seen: list[str] = []

    def handler(content: str, metadata: Any) -> bool:
        seen.append(content)
        return True

    Manager(routes=[Route(MemoryProvider(broker, "q"), handler)]).run(forever=False)
    assert sorted(seen) == ["a", "b", "c"]
    assert broker.is_idle("q")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_routes_on_different_providers_side_by_side() -> None:
    """Two brokers (two provider instances of different queues) in one manager."""
    b1, b2 = MemoryBroker(), MemoryBroker()
    b1.publish("x", 1)
    b2.publish("y", 2)
    seen: list[int] = []

    def handler(content: int, metadata: object) -> bool:
        seen.append(content)
        return True

    Manager([Route(MemoryProvider(b1, "x"), handler), Route(MemoryProvider(b2, "y"), handler)]).run(
        forever=False
    )
    assert sorted(seen) == [1, 2]


# -- the async API: stop and wait_started whatever the timing ------------------------------


async def test_stop_before_serve_gets_going_is_honoured(broker: MemoryBroker) -> None:
    manager = Manager([Route(MemoryProvider(broker, "q", wait=0.05), lambda c, m: True)])
    serving = asyncio.create_task(manager.serve())
    manager.stop()  # a shutdown request racing start-up: serve() has not run a step yet
    await asyncio.wait_for(serving, 5)


async def test_wait_started_raises_the_error_that_ended_serve() -> None:
    broker = MemoryBroker()  # queue "missing" never declared
    manager = Manager([Route(MemoryProvider(broker, "missing"), lambda c, m: True)])
    serving = asyncio.create_task(manager.serve())
    waiting = asyncio.create_task(manager.wait_started())  # before serve() fails
    with pytest.raises(ConfigurationError, match="missing"):
        await asyncio.wait_for(serving, 5)
    with pytest.raises(ConfigurationError, match="missing"):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(ConfigurationError, match="missing"):  # and after it failed
        await asyncio.wait_for(manager.wait_started(), 5)


async def test_stop_now_ends_even_if_the_broker_never_answers_a_release(
    broker: MemoryBroker,
) -> None:
    unblock = asyncio.Event()

    class HangingRelease(MemoryProvider):
        async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
            if outcome.kind is OutcomeKind.RELEASE:
                await unblock.wait()  # the broker does not answer
            await super().settle(delivery, outcome)

    broker.publish("q", "in flight")
    broker.publish("q", "unstarted")
    started = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        started.set()
        await asyncio.Event().wait()  # runs until cut short
        return True

    route = Route(HangingRelease(broker, "q", wait=0.05), handler, max_concurrency=1)
    manager = Manager([route], shutdown_timeout=30)
    serving = asyncio.create_task(manager.serve())
    try:
        await asyncio.wait_for(started.wait(), 5)
        manager.stop()
        manager.stop(now=True)  # the second signal: at once, whatever the broker does
        await asyncio.wait_for(asyncio.shield(serving), 5)
    finally:
        unblock.set()
        await asyncio.wait_for(serving, 5)
    assert broker.in_flight("q") == 1  # never released: the broker redelivers it later


async def test_a_route_runs_once_and_a_second_run_says_so_at_once(broker: MemoryBroker) -> None:
    """Before: serving a stopped Manager again neither started nor failed (providers
    closed: RabbitMQ/AMQP retried 'provider already closed' for ever, SQS failed every
    fetch, and wait_started() never resolved)."""
    route = Route(MemoryProvider(broker, "q"), lambda c, m: True)
    manager = Manager([route], shutdown_timeout=1)
    async with asyncio.timeout(10):
        async with manager:
            await manager.wait_started()
        with pytest.raises(ConfigurationError, match=r"already ran .* build new routes"):
            await manager.serve()
        with pytest.raises(ConfigurationError, match="already ran"):
            await manager.wait_started()
        with pytest.raises(ConfigurationError, match="already ran"):
            await Manager([route]).serve()  # the same route in another manager
        # new routes run
        broker.publish("q", "x")
        report = await run_until_idle(Route(MemoryProvider(broker, "q"), lambda c, m: True))
        assert len(report.accepted) == 1


EXITING = textwrap.dedent(
    """
    import asyncio, logging, sys, threading, time
    from loafer_core import Manager, Route
    from loafer_core.memory import HISTORY, MemoryBroker, MemoryProvider

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    kind, exc = sys.argv[1], {"exit": SystemExit(3), "interrupt": KeyboardInterrupt()}[sys.argv[2]]
    broker = MemoryBroker(history=HISTORY)
    broker.publish_many("q", ["slow", "stop", "later-1", "later-2"])
    slow_began = threading.Event()

    def sync_handler(content, metadata):
        if content == "slow":
            slow_began.set()
            time.sleep(0.3)  # in flight when the exit is asked: it must finish (drain)
            return True
        slow_began.wait(5)
        raise exc

    async def async_handler(content, metadata):
        if content == "slow":
            slow_began.set()
            await asyncio.sleep(0.3)
            return True
        slow_began.wait(5)
        raise exc

    handler = sync_handler if kind == "sync" else async_handler
    route = Route(MemoryProvider(broker, "q", wait=0.1), handler, max_concurrency=2)
    try:
        Manager([route], shutdown_timeout=10).run()
    finally:
        kinds = [s.outcome.kind.name for s in broker.settlements("q")]
        print("ACCEPT", kinds.count("ACCEPT"), "RELEASE", kinds.count("RELEASE"),
              "DEPTH", broker.depth("q"), "INFLIGHT", broker.in_flight("q"), flush=True)
    """
)


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(("raised", "codes"), [("exit", {3}), ("interrupt", {130, -2})])
def test_a_handler_raising_system_exit_or_keyboard_interrupt_drains_then_exits_with_it(
    tmp_path: Path, kind: str, raised: str, codes: set[int]
) -> None:
    """Before: the event loop died at once (asyncio re-raises them out of the task), with
    the in-flight handler cut and nothing settled."""
    script = tmp_path / "exiting.py"
    script.write_text(EXITING)
    proc = subprocess.run(
        [sys.executable, str(script), kind, raised],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode in codes, proc.stderr
    # the slow one finished (ACCEPT), the one that asked to stop went back (RELEASE),
    # nothing was left in flight, and the rest was not started
    assert "ACCEPT 1 RELEASE 1 DEPTH 3 INFLIGHT 0" in proc.stdout, proc.stderr
    assert "the message is released and the service stops" in proc.stderr


class Fatal(BaseException):
    """A custom BaseException that is not an Exception."""


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_other_base_exceptions_are_errors_and_never_lose_a_worker(
    broker: MemoryBroker, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: each one killed its worker, left the delivery unsettled and its slot taken;
    after max_concurrency of them the route consumed nothing more, logging nothing."""
    raising = [Fatal("custom"), GeneratorExit()] * 3
    for i in range(len(raising)):
        broker.publish("q", f"bad-{i}")
    broker.publish("q", "good")

    def sync_handler(content: str, metadata: Any) -> bool:
        if content.startswith("bad-"):
            raise raising[int(content[4:])]
        return True

    async def async_handler(content: str, metadata: Any) -> bool:
        return sync_handler(content, metadata)

    seen: list[type[BaseException]] = []

    def on_error(exc_type: type[BaseException], exc: BaseException, raw: Any) -> Outcome:
        seen.append(exc_type)
        return Outcome.REJECT(repr(exc))

    route = Route(
        MemoryProvider(broker, "q"),
        sync_handler if kind == "sync" else async_handler,
        error_handler=on_error,
        max_concurrency=2,
    )
    report = await run_until_idle(route, timeout=10)
    assert sorted(s.body for s in report.rejected) == sorted(f"bad-{i}" for i in range(6))
    assert [s.body for s in report.accepted] == ["good"]
    assert sorted(t.__name__ for t in seen) == ["Fatal"] * 3 + ["GeneratorExit"] * 3

    # without an error handler: logged at ERROR with the traceback, and RETRIED
    broker.publish("r", "bad-0")
    route = Route(MemoryProvider(broker, "r"), sync_handler, max_attempts=1, retry=None)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="loafer_core.route"):
        report = await run_until_idle(route, timeout=10)
    assert [s.outcome.kind for s in report.settlements] == [OutcomeKind.REJECT]
    assert any(r.exc_info and r.exc_info[0] is Fatal for r in caplog.records)
