"""pytest plugin: tests marked ``serial`` run alone, even under pytest-xdist.

A ``serial`` test stops or restarts a broker that every other test shares (RabbitMQ's
``stop_app``): run beside them, it would fail theirs. Under xdist (``scripts/test.sh``
runs the suite on several workers) each test holds a lock file shared by all workers of
the run: ordinary tests a shared lock, a ``serial`` test the exclusive one, so it starts
once the tests under way have ended and the others wait for it. A turnstile lock taken
before either keeps a waiting ``serial`` test from being starved by a stream of new
shared holders. Without xdist the plugin does nothing.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _run_dir() -> Path | None:
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run or not os.environ.get("PYTEST_XDIST_WORKER"):
        return None
    where = Path(tempfile.gettempdir()) / f"loafer-tests-{run}"
    where.mkdir(exist_ok=True)
    return where


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, mode)  # blocks; the holder's test has its own timeout
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    where = _run_dir()
    if where is None:
        yield
        return
    serial = item.get_closest_marker("serial") is not None
    with _flock(where / "turnstile", fcntl.LOCK_EX):
        if serial:  # hold the turnstile: no new test starts while this one waits and runs
            with _flock(where / "tests", fcntl.LOCK_EX):
                yield
            return
        shared = (where / "tests").open("a")
        fcntl.flock(shared, fcntl.LOCK_SH)
    try:
        yield
    finally:
        fcntl.flock(shared, fcntl.LOCK_UN)
        shared.close()
