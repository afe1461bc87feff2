"""pytest plugin: child processes for the crash and shutdown tests, started, waited on,
killed or stopped with bounded waits, their output named in every failure.

::

    def test_it(spawn: Spawn) -> None:
        worker = spawn([sys.executable, "worker.py", "--url", url])
        worker.wait_for("consuming", timeout=30)  # a line of its output
        worker.kill()  # SIGKILL; -9
        assert worker.terminate(30) == 0  # SIGTERM, then its exit code

The child's stdout and stderr (or stderr alone) are read by a thread: a wait for a line
is woken by the line, not by polling. A condition on something else (a file the child
writes, a broker's state) is awaited with :meth:`Child.until`, which is
:func:`loafer_core.testing.eventually` failing at once if the child exits meanwhile.
Every child the ``spawn`` fixture started is killed at the end of the test.

:class:`Events` reads the ``KIND N [PID]`` lines the workers append to a file.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from loafer_core.testing import eventually

__all__ = ["ROOT", "Child", "Events", "Spawn", "python", "python_env", "spawn"]

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

#: how much of a child's output a failure message shows (its end)
TAIL = 5000


def python_env(env: Mapping[str, str] | None = None, *paths: Path) -> dict[str, str]:
    """``os.environ`` with ``env`` over it, unbuffered output, and ``src/``, the repository
    root (for ``tests.*``) and ``paths`` first on ``PYTHONPATH``."""
    merged = {**os.environ, **(env or {})}
    path = [str(ROOT / "src"), str(ROOT), *map(str, paths)]
    if merged.get("PYTHONPATH"):
        path.append(merged["PYTHONPATH"])
    merged.update(PYTHONPATH=os.pathsep.join(path), PYTHONUNBUFFERED="1")
    return merged


Lines = Callable[[list[str]], bool]


class Child:
    """A command in a child process; its output lines collected as they come."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdout: bool = True,
        name: str | None = None,
    ) -> None:
        """``env`` is the whole environment (see :func:`python_env`), else ``os.environ``'s;
        ``stdout=False``: only stderr is collected (stdout discarded)."""
        self.argv = [str(arg) for arg in argv]
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.stdout = stdout
        self.name = name or Path(self.argv[-1] if len(self.argv) > 1 else self.argv[0]).name
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    # -- starting --------------------------------------------------------------------------

    def start(self) -> Child:
        """Start the process (once); returns ``self``."""
        if self._process is not None:
            raise RuntimeError(f"{self.name} already started")
        self._process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.stdout else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self.stdout else subprocess.PIPE,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, name=f"read-{self.name}", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        stream = self.process.stdout if self.stdout else self.process.stderr
        assert stream is not None
        with stream:
            for line in stream:
                with self._changed:
                    self.lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    @property
    def process(self) -> subprocess.Popen[str]:
        if self._process is None:
            raise RuntimeError(f"{self.name} not started")
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, ``None`` while it runs."""
        return self.process.poll()

    @property
    def output(self) -> str:
        """What it wrote so far (stdout and stderr, or stderr alone)."""
        with self._changed:
            return "\n".join(self.lines)

    def describe(self) -> str:
        """Its name, exit code and the end of its output: for failure messages."""
        if self._process is None:
            state = "not started"
        else:
            code = self.returncode
            state = "running" if code is None else f"exit code {code}"
        return f"{self.name} ({state}); its output:\n{self.output[-TAIL:]}"

    # -- waiting ---------------------------------------------------------------------------

    def wait_for(
        self, what: str | re.Pattern[str] | Lines, timeout: float = 30, *, count: int = 1
    ) -> list[str]:
        """Wait until ``count`` output lines contain ``what`` (a string or a pattern), or
        ``what(lines)`` holds (a predicate over every line so far); returns the lines
        matching (all lines, for a predicate). Fails when it exits first or past
        ``timeout`` seconds."""
        if callable(what) and not isinstance(what, re.Pattern):
            done, describe = what, getattr(what, "__qualname__", repr(what))
        else:
            pattern = what if isinstance(what, re.Pattern) else re.compile(re.escape(what))

            def done(lines: list[str]) -> bool:
                return sum(1 for line in lines if pattern.search(line)) >= count

            describe = f"{count} line(s) matching {pattern.pattern!r}"
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self.lines):
                if self._ended:
                    self.process.wait(10)  # its output ended: it has exited, or about to
                    raise AssertionError(f"{describe}: never, {self.describe()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{describe}: not within {timeout:g}s, {self.describe()}")
                self._changed.wait(remaining)
            if callable(what) and not isinstance(what, re.Pattern):
                return list(self.lines)
            return [line for line in self.lines if pattern.search(line)]

    async def until(
        self,
        check: Callable[[], Any],
        timeout: float,
        what: str | None = None,
        *,
        interval: float = 0.05,
    ) -> Any:
        """:func:`~loafer_core.testing.eventually` ``check()`` (a plain or async condition on
        state the child changes: a file, a broker), every ``interval`` seconds, failing at
        once if the child exits before it holds; returns ``check``'s value."""
        name = what or getattr(check, "__qualname__", repr(check))

        async def alive_and_checked() -> Any:
            result = check()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            if not result and self.returncode is not None:
                raise _Exited
            return result

        try:
            return await eventually(
                alive_and_checked, timeout=timeout, interval=interval, what=name
            )
        except _Exited:
            raise AssertionError(f"{name}: never, {self.describe()}") from None
        except AssertionError as failure:
            raise AssertionError(f"{failure}\n{self.describe()}") from None

    # -- ending ----------------------------------------------------------------------------

    def exit_code(self, timeout: float) -> int:
        """Wait (at most ``timeout`` seconds) for it to exit; its exit code."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"not exited within {timeout:g}s: {self.describe()}") from None
        if self._reader is not None:
            self._reader.join(10)  # the rest of its output
        return code

    def signal(self, number: int) -> None:
        """Send signal ``number`` if it still runs."""
        if self.process.poll() is None:
            self.process.send_signal(number)

    def kill(self, timeout: float = 10) -> int:
        """SIGKILL, then its exit code (``-9`` unless it had exited)."""
        self.signal(signal.SIGKILL)
        return self.exit_code(timeout)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then its exit code within ``timeout`` seconds; past that it is killed
        and the test fails, with its output."""
        self.signal(signal.SIGTERM)
        try:
            return self.exit_code(timeout)
        except AssertionError:
            self.kill()
            raise

    async def aexit_code(self, timeout: float) -> int:
        """:meth:`exit_code`, waited for in a thread (the event loop keeps running)."""
        return await asyncio.to_thread(self.exit_code, timeout)

    async def akill(self, timeout: float = 10) -> int:
        self.signal(signal.SIGKILL)
        return await self.aexit_code(timeout)

    async def aterminate(self, timeout: float = 30) -> int:
        return await asyncio.to_thread(self.terminate, timeout)

    def close(self) -> None:
        """Kill it if it still runs (clean-up)."""
        if self._process is not None and self._process.poll() is None:
            self.kill()
        elif self._reader is not None:
            self._reader.join(10)


class _Exited(Exception):
    """The child exited while :meth:`Child.until` waited (not an AssertionError:
    :func:`eventually` stops at once)."""


class Spawn(Protocol):
    """The ``spawn`` fixture: ``Child(argv, **options)``, started, killed at the end."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = ...,
        env: Mapping[str, str] | None = ...,
        stdout: bool = ...,
        name: str | None = ...,
    ) -> Child: ...


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start child processes (:class:`Child`); any still running at the end is killed."""
    started: list[Child] = []

    def start(argv: Sequence[str], **options: Any) -> Child:
        child = Child(argv, **options)
        started.append(child)
        return child.start()

    yield start
    for child in started:
        child.close()


def python(script: Path | str, *args: str) -> list[str]:
    """The command running ``script`` (a path, or ``-m module``) with this interpreter."""
    return [sys.executable, str(script), *args]


class Events:
    """The ``KIND N`` or ``KIND N PID`` lines a worker appends to ``path`` (one write per
    line; a line cut short by a SIGKILL is skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[tuple[str, int, int | None]]:
        if not self.path.exists():
            return []
        out: list[tuple[str, int, int | None]] = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) not in (2, 3) or not all(p.lstrip("-").isdigit() for p in parts[1:]):
                continue
            pid = int(parts[2]) if len(parts) == 3 else None
            out.append((parts[0], int(parts[1]), pid))
        return out

    def of(self, kind: str, child: Child | None = None) -> list[int]:
        """The numbers of the ``kind`` events (of ``child``'s process alone, if given)."""
        pid = None if child is None else child.pid
        return [n for k, n, p in self.read() if k == kind and (pid is None or p == pid)]

    def counts(self, kind: str) -> collections.Counter[int]:
        """How many times each number has a ``kind`` event."""
        return collections.Counter(self.of(kind))

    def tail(self, size: int = 3000) -> str:
        return self.path.read_text()[-size:] if self.path.exists() else ""
