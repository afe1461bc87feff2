"""Running the ``loafer`` command in a subprocess, with bounded waits."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

SCRIPT = shutil.which("loafer", path=str(Path(sys.executable).parent)) or "loafer"


def loafer(
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``loafer ARGS`` to completion (at most ``timeout`` seconds)."""
    return subprocess.run(
        [SCRIPT, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Service:
    """``loafer run ...`` in the background; its stderr lines collected by a thread."""

    def __init__(self, args: Sequence[str], cwd: Path, env: Mapping[str, str]) -> None:
        self.process = subprocess.Popen(
            [SCRIPT, "run", *args],
            cwd=cwd,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for line in self.process.stderr:
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, count: int = 1, timeout: float = 30) -> list[str]:
        """Wait until ``count`` stderr lines contain ``text``; return those lines."""
        self.wait_until(
            lambda lines: sum(text in line for line in lines) >= count,
            f"{count} line(s) with {text!r}",
            timeout,
        )
        return [line for line in self.lines if text in line]

    def wait_until(self, done: Callable[[list[str]], bool], what: str, timeout: float = 30) -> None:
        """Wait until ``done(lines)`` holds for the stderr lines seen so far."""
        deadline = time.monotonic() + timeout
        while not done(self.lines):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{what} not seen in {timeout}s:\n" + "\n".join(self.lines))
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"loafer run ended (rc={self.process.wait(10)}) before {what}:\n"
                    + "\n".join(self.lines)
                )
            self.lines.append(line)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the exit code (and the rest of stderr)."""
        self.process.terminate()
        try:
            rc = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(10)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return rc

    def kill(self) -> None:
        """Kill it if it still runs (test clean-up)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(10)
