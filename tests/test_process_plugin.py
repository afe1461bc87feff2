"""tests/_process.py: a child process started, waited on, killed or stopped, bounded."""

from __future__ import annotations

import re
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests._process import Child, Events, Spawn, python, python_env

#: prints "ready" (and a line to stderr), then waits for SIGTERM: prints "bye", exits 3
CHILD = textwrap.dedent(
    """
    import signal, sys

    def bye(*_):
        print("bye", flush=True)
        sys.exit(3)

    signal.signal(signal.SIGTERM, bye)
    if "--ignore-term" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring", flush=True)
    print("ready", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    if "--exit" in sys.argv:
        sys.exit(5)
    while True:
        signal.pause()
    """
)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


def test_waits_for_a_line_then_terminates_with_the_exit_code(spawn: Spawn, script: Path) -> None:
    child = spawn(python(script), env=python_env())
    assert child.wait_for("ready", timeout=30) == ["ready"]
    assert child.wait_for(re.compile(r"^to std"), timeout=30) == ["to stderr"]
    assert child.terminate(30) == 3
    assert "bye" in child.lines
    assert child.returncode == 3


def test_stderr_alone_when_stdout_is_not_wanted(spawn: Spawn, script: Path) -> None:
    child = spawn(python(script), stdout=False)
    child.wait_for("to stderr", timeout=30)
    assert child.kill() == -signal.SIGKILL
    assert child.lines == ["to stderr"]


def test_a_predicate_over_the_lines(spawn: Spawn, script: Path) -> None:
    child = spawn(python(script))
    lines = child.wait_for(lambda lines: len(lines) >= 2, timeout=30)
    assert sorted(lines) == ["ready", "to stderr"]


def test_a_child_that_exits_first_fails_the_wait_at_once_with_its_output(
    spawn: Spawn, script: Path
) -> None:
    child = spawn(python(script, "--exit"))
    began = time.monotonic()
    with pytest.raises(AssertionError, match=r"(?s)never.*exit code 5.*ready"):
        child.wait_for("never printed", timeout=60, count=1)
    assert time.monotonic() - began < 30


def test_a_wait_past_its_timeout_fails_with_the_output(spawn: Spawn, script: Path) -> None:
    child = spawn(python(script))
    child.wait_for("ready", timeout=30)
    with pytest.raises(AssertionError, match=r"(?s)not within 0.2s.*running.*ready"):
        child.wait_for("ready", count=2, timeout=0.2)


def test_a_child_ignoring_sigterm_is_killed_past_the_timeout(spawn: Spawn, script: Path) -> None:
    child = spawn(python(script, "--ignore-term"))
    child.wait_for("ignoring", timeout=30)
    with pytest.raises(AssertionError, match=r"not exited within 0\.5s"):
        child.terminate(0.5)
    assert child.returncode == -signal.SIGKILL


async def test_until_a_condition_on_a_file_and_the_async_ends(spawn: Spawn, tmp_path: Path) -> None:
    log = tmp_path / "events"
    code = (
        f"import os, signal; open({str(log)!r}, 'a').write(f'done 7 {{os.getpid()}}\\n');"
        " signal.pause()"
    )
    child = spawn([sys.executable, "-c", code])
    events = Events(log)
    assert await child.until(lambda: events.of("done", child), 30) == [7]
    assert events.counts("done") == {7: 1}
    assert await child.aterminate(30) == -signal.SIGTERM
    assert await child.akill() == -signal.SIGTERM  # already ended: its code


async def test_until_fails_at_once_when_the_child_exits(spawn: Spawn) -> None:
    child = spawn([sys.executable, "-c", "print('bye')"])
    began = time.monotonic()
    with pytest.raises(AssertionError, match=r"(?s)never, .*exit code 0.*bye"):
        await child.until(lambda: False, 60, what="something")
    assert time.monotonic() - began < 30


def test_events_skip_a_line_cut_short(tmp_path: Path) -> None:
    log = tmp_path / "events"
    log.write_text("start 1 10\ndone 1 10\nstart 2 11\ndone 2\ndon")
    events = Events(log)
    assert events.of("start") == [1, 2]
    assert events.of("done") == [1, 2]
    child = Child(["true"])
    assert Events(tmp_path / "absent").of("done") == []
    assert child.describe().startswith("true (not started)")
