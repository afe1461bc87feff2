"""Running the ``loafer`` command in a subprocess, with bounded waits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tests._process import Child

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


class Service(Child):
    """``loafer run ...`` in the background (started at once), its stderr lines collected:
    the harness's :class:`~tests._process.Child`, with the names these tests use."""

    def __init__(self, args: Sequence[str], cwd: Path, env: Mapping[str, str]) -> None:
        super().__init__(
            [SCRIPT, "run", *args],
            cwd=cwd,
            env={**os.environ, **env},
            stdout=False,
            name="loafer run",
        )
        self.start()

    def wait_until(self, done: Callable[[list[str]], bool], what: str, timeout: float = 30) -> None:
        """Wait until ``done(lines)`` holds for the stderr lines seen so far."""
        try:
            self.wait_for(done, timeout)
        except AssertionError as failure:
            raise AssertionError(f"{what}: {failure}") from None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code (and the rest of stderr)."""
        return self.terminate(timeout)
