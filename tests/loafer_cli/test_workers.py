"""``supervise`` (``loafer run --workers N``): real worker processes on a real RabbitMQ.

The supervisor runs in a subprocess of the test (a small script calling ``supervise``), so
the signals it gets and forwards are real. Each worker runs a ``Manager`` with one
``RabbitRoute`` whose handler records the ids it starts and finishes in per-process files
(``started-<worker>-<pid>.ids``, ``done-<worker>-<pid>.ids``, appended and flushed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from loafer_cli.workers import EX_CONFIG, RestartBackoff, _Supervisor, supervise
from loafer_core.testing import eventually
from tests.loafer_rabbit.conftest import RabbitAdmin, unique

WORKER = textwrap.dedent(
    """
    import asyncio, json, os, sys

    url, queue, out, mode, delay, concurrency, drain = sys.argv[1:8]
    index = os.environ["LOAFER_WORKER"]
    if mode == "crash":
        sys.exit(3)
    if mode == "deaf":  # ignores SIGTERM and SIGINT, never ends on its own
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        open(os.path.join(out, f"done-{index}-{os.getpid()}.ids"), "a").close()
        while True:
            time.sleep(60)
    if mode == "config" and index == "1":
        queue = queue + "-missing"  # not declared: a ConfigurationError at start

    from loafer_core import Manager
    from loafer_core.errors import ConfigurationError
    from loafer_rabbit import RabbitRoute

    pid = os.getpid()
    started = open(os.path.join(out, f"started-{index}-{pid}.ids"), "a")
    done = open(os.path.join(out, f"done-{index}-{pid}.ids"), "a")

    async def handle(content, metadata):
        started.write(f"{content['id']}\\n")
        started.flush()
        await asyncio.sleep(float(delay))
        done.write(f"{content['id']}\\n")
        done.flush()
        return True

    route = RabbitRoute(queue, url=url, handler=handle, max_concurrency=int(concurrency))
    try:
        Manager([route], shutdown_timeout=float(drain)).run()
    except ConfigurationError as exc:
        print(f"worker {index}: configuration error: {exc}", file=sys.stderr)
        sys.exit(78)
    """
)

PARENT = textwrap.dedent(
    """
    import json, logging, sys
    from loafer_cli.workers import RestartBackoff, supervise

    config = json.loads(sys.argv[1])
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s"
    )
    sys.exit(
        supervise(
            config["command"],
            config["workers"],
            backoff=RestartBackoff(**config["backoff"]),
            max_restarts=config["max_restarts"],
            restart_window=60.0,
            shutdown_timeout=config["shutdown_timeout"],
            kill_margin=config["kill_margin"],
        )
    )
    """
)


class Supervisor:
    """The supervisor under test, in a subprocess, and what its workers recorded."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.out = tmp_path / "out"
        self.out.mkdir()
        self.log = tmp_path / "supervisor.log"
        self.process: asyncio.subprocess.Process | None = None
        (tmp_path / "worker.py").write_text(WORKER)
        (tmp_path / "parent.py").write_text(PARENT)

    async def start(
        self,
        url: str,
        queue: str,
        *,
        workers: int = 3,
        mode: str = "consume",
        delay: float = 0.0,
        concurrency: int = 4,
        drain: float = 30.0,
        backoff: dict[str, float] | None = None,
        max_restarts: int = 5,
        shutdown_timeout: float = 30.0,
        kill_margin: float = 10.0,
    ) -> None:
        command = [sys.executable, str(self.dir / "worker.py"), url, queue, str(self.out)]
        command += [mode, str(delay), str(concurrency), str(drain)]
        config = {
            "command": command,
            "workers": workers,
            "backoff": backoff or {"initial": 0.1, "maximum": 1.0},
            "max_restarts": max_restarts,
            "shutdown_timeout": shutdown_timeout,
            "kill_margin": kill_margin,
        }
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(self.dir / "parent.py"),
                json.dumps(config),
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group, as a terminal would give it
            )

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def signal_group(self, sig: int) -> None:
        """Signal the parent's process group, as a terminal's Ctrl-C does."""
        assert self.process is not None
        os.killpg(self.process.pid, sig)

    async def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        async with asyncio.timeout(timeout):
            return await self.process.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def files(self, kind: str) -> dict[tuple[int, int], list[str]]:
        """``{(worker, pid): [ids]}`` of the ``started`` or ``done`` files."""
        out: dict[tuple[int, int], list[str]] = {}
        for path in self.out.glob(f"{kind}-*.ids"):
            _, index, pid = path.stem.split("-")
            out[int(index), int(pid)] = path.read_text().split()
        return out

    def ids(self, kind: str = "done") -> set[str]:
        return {i for ids in self.files(kind).values() for i in ids}

    def pids(self, index: int) -> set[int]:
        return {pid for (i, pid) in self.files("done") if i == index}

    async def stop(self) -> None:
        """Teardown: SIGKILL whatever is still running (the parent, then workers)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.wait(30)
        for _, pid in self.files("done"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
async def supervisor(tmp_path: Path) -> AsyncIterator[Supervisor]:
    helper = Supervisor(tmp_path)
    try:
        yield helper
    finally:
        await helper.stop()


async def fill(admin: RabbitAdmin, count: int) -> tuple[str, set[str]]:
    queue = await admin.declare(unique("loafer-workers"))
    ids = [str(i) for i in range(count)]
    await admin.put_many(queue, [json.dumps({"id": i}).encode() for i in ids])
    return queue, set(ids)


@pytest.mark.rabbit
async def test_a_killed_worker_is_restarted_nothing_is_lost_and_sigterm_drains_all(
    rabbit_url: str, admin: RabbitAdmin, supervisor: Supervisor
) -> None:
    queue, ids = await fill(admin, 2000)
    await supervisor.start(rabbit_url, queue, workers=3, delay=0.02, concurrency=4)

    await eventually(
        lambda: any(len(v) >= 50 for (i, _), v in supervisor.files("done").items() if i == 1),
        timeout=60,
        what="worker 1 to handle 50 messages",
    )
    [victim] = supervisor.pids(1)
    os.kill(victim, signal.SIGKILL)
    assert len(supervisor.ids()) < len(ids), "the kill came mid-stream"

    await eventually(lambda: len(supervisor.pids(1)) == 2, timeout=60, what="worker 1 restarted")
    await eventually(lambda: supervisor.ids() >= ids, timeout=60, what="every id handled")
    assert len(supervisor.pids(0)) == len(supervisor.pids(2)) == 1  # the others lived on
    assert supervisor.ids() == ids
    restarted = (supervisor.pids(1) - {victim}).pop()
    assert supervisor.files("done")[1, restarted], "the restarted worker took its share"

    supervisor.signal(signal.SIGTERM)
    assert await supervisor.wait() == 0, supervisor.text()
    log = supervisor.text()
    assert f"worker 1 (pid {victim}) died unexpectedly" in log
    assert "killed by SIGKILL" in log
    assert "worker 1: restarting in" in log
    assert f"worker 1 started (pid {restarted})" in log
    assert "SIGTERM received: forwarding it to 3 workers" in log
    assert "supervisor exiting with code 0 (3 workers, 1 restarts" in log
    await admin.wait_count(queue, 0)


@pytest.mark.rabbit
@pytest.mark.parametrize("how", ["SIGTERM to the parent", "Ctrl-C: SIGINT to its group"])
async def test_a_signal_while_workers_are_busy_drains_every_worker(
    rabbit_url: str, admin: RabbitAdmin, supervisor: Supervisor, how: str
) -> None:
    queue, ids = await fill(admin, 60)
    await supervisor.start(rabbit_url, queue, workers=3, delay=1.5, concurrency=3)
    await eventually(
        lambda: {i for (i, _), v in supervisor.files("started").items() if v} == {0, 1, 2},
        timeout=60,
        what="every worker to be handling messages",
    )

    if how.startswith("SIGTERM"):
        supervisor.signal(signal.SIGTERM)
    else:  # the workers have their own sessions: they get the SIGINT once, forwarded
        supervisor.signal_group(signal.SIGINT)
    assert await supervisor.wait() == 0, supervisor.text()

    started, done = supervisor.files("started"), supervisor.files("done")
    assert len(started) == 3
    for key, began in started.items():
        assert began, key
        assert set(began) <= set(done[key]), f"worker {key}: an in-flight handler was cut"
    handled = supervisor.ids()
    assert len(handled) < len(ids), "the stop came while messages were waiting"
    # the fetched-but-unstarted deliveries went back: nothing lost
    await admin.wait_count(queue, len(ids) - len(handled))
    log = supervisor.text()
    assert "received: forwarding it to 3 workers" in log
    assert "received again" not in log
    assert "restarting in" not in log


@pytest.mark.rabbit
async def test_a_worker_exiting_78_stops_every_worker_and_the_parent_exits_78(
    rabbit_url: str, admin: RabbitAdmin, supervisor: Supervisor
) -> None:
    queue, _ = await fill(admin, 1)
    await supervisor.start(rabbit_url, queue, workers=3, mode="config")

    assert await supervisor.wait() == 78, supervisor.text()
    log = supervisor.text()
    assert "exited with code 78 (EX_CONFIG" in log
    assert log.count(" started (pid ") == 3, "no worker was restarted"
    assert "restarting in" not in log
    assert "supervisor exiting with code 78" in log


async def test_a_worker_dying_at_once_every_time_makes_the_parent_give_up(
    supervisor: Supervisor,
) -> None:
    await supervisor.start(
        "unused",
        "unused",
        workers=2,
        mode="crash",
        backoff={"initial": 0.02, "maximum": 0.1},
        max_restarts=3,
    )

    assert await supervisor.wait() == 1, supervisor.text()
    log = supervisor.text()
    assert "died unexpectedly" in log and "exit code 3" in log
    assert "times within 60s (more than max_restarts=3): giving up" in log
    # the one that gave up ran 4 times; the other at most as often
    assert 4 <= log.count(" started (pid ") <= 8
    assert "supervisor exiting with code 1" in log


async def test_a_worker_ignoring_the_signal_is_killed_after_the_margin(
    supervisor: Supervisor,
) -> None:
    await supervisor.start(
        "unused", "unused", workers=2, mode="deaf", shutdown_timeout=0.5, kill_margin=0.5
    )
    await eventually(
        lambda: len(supervisor.files("done")) == 2, timeout=60, what="both workers started"
    )

    supervisor.signal(signal.SIGINT)
    await eventually(
        lambda: "SIGINT received" in supervisor.text(), timeout=60, what="the first signal"
    )
    supervisor.signal(signal.SIGTERM)
    assert await supervisor.wait(30) == 1, supervisor.text()
    log = supervisor.text()
    assert "SIGINT received: forwarding it to 2 workers" in log
    assert "SIGTERM received again: forwarding it to 2 workers" in log
    assert log.count("still running 1s after the stop began: SIGKILL") == 2
    assert "supervisor exiting with code 1" in log


def test_the_backoff_grows_with_jitter_and_is_capped() -> None:
    backoff = RestartBackoff(initial=1.0, factor=2.0, maximum=10.0, jitter=0.25)
    rng = random.Random(7)
    for n, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (500, 10.0)]:
        for _ in range(50):
            assert base * 0.75 <= backoff.delay(n, rng) <= base
    with pytest.raises(ValueError):
        RestartBackoff(initial=5.0, maximum=1.0)


async def test_the_backoff_resets_once_a_worker_has_lived_long_enough() -> None:
    backoff = RestartBackoff(initial=1.0, stable_after=30.0)
    supervisor = _Supervisor(["true"], 1, {}, backoff, 5, 600.0, 1.0, 1.0)
    [slot] = supervisor.slots
    now = time.monotonic()
    for expected in (1, 2, 3):  # quick deaths: the backoff grows
        slot.started_at = now
        assert supervisor._died(slot, 1, 1)
        assert slot.consecutive == expected
    slot.started_at = now - 31.0  # lived past stable_after: starts over
    assert supervisor._died(slot, 1, 1)
    assert slot.consecutive == 1
    for _ in range(2):  # six deaths within the window: more than max_restarts=5
        slot.started_at = time.monotonic()
        supervisor._died(slot, 1, 1)
    assert supervisor.exit_code == 1
    assert supervisor.watchdog is not None  # the others are being stopped
    supervisor.watchdog.cancel()


def test_a_command_that_cannot_start_is_a_configuration_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loafer_cli.workers")
    assert supervise([str(tmp_path / "no-such-command")], 2) == EX_CONFIG
    assert "worker 0: cannot start" in caplog.text
    assert "supervisor exiting with code 78" in caplog.text


def test_nonsense_arguments_are_refused() -> None:
    for workers in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="workers"):
            supervise(["true"], workers)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="command"):
        supervise([], 1)
