"""Broker resolution for the test suite.

Each broker fixture resolves its address in this order:

1. an address from an environment variable (e.g. ``LOAFER_TEST_RABBIT_URL``);
2. the local service (probed on loopback);
3. a testcontainers container, when a Docker engine answers;
4. otherwise the test is skipped with the reason, except under CI (``CI=true``), where
   a missing broker fails the run.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def unavailable(reason: str) -> None:
    """Skip the test with ``reason``, or fail it under CI."""
    if under_ci():
        pytest.fail(f"broker unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def resolve(
    *,
    env_var: str,
    local: Callable[[], str | None],
    container: Callable[[], str] | None = None,
    what: str,
) -> str:
    """Return a broker address following the order above (skips/fails if none)."""
    value = os.environ.get(env_var)
    if value:
        return value
    found = local()
    if found:
        return found
    if container is not None and docker_available():
        return container()
    unavailable(
        f"no {what}: set {env_var}, run one locally, or start a Docker engine for testcontainers"
    )
    raise AssertionError("unreachable")
