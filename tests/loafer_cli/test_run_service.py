"""``loafer run --workers N --health-port P --status-interval S`` on a real RabbitMQ: every
worker serves, its readiness is probed over HTTP, a killed worker is restarted, nothing is
lost, SIGTERM drains them all and the command exits 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.loafer_cli.runner import Service
from tests.loafer_cli.test_run import write_app
from tests.loafer_rabbit.conftest import RabbitAdmin

pytestmark = pytest.mark.rabbit


def _free_port_pair() -> int:
    """A port P with P+1 free too (checked just before use)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 65535:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise AssertionError("no pair of free ports")


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)
    except OSError:
        return 0  # not listening (yet, or any more)


def wait_ready(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while readyz(port) != 200:
        assert time.monotonic() < deadline, f"port {port} never ready"
        time.sleep(0.1)  # polling an HTTP endpoint: nothing to await


async def test_workers_with_health_ports_survive_a_killed_worker_and_drain(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await admin.declare()
    port = _free_port_pair()
    service = Service(
        [
            "app:routes",
            "--workers",
            "2",
            "--health-port",
            str(port),
            "--health-host",
            "127.0.0.1",
            "--status-interval",
            "0.5",
            "--shutdown-timeout",
            "5",
        ],
        cwd=write_app(tmp_path),
        env={"QUEUE": queue, "RABBIT_URL": rabbit_url},
    )
    try:
        wait_ready(port)
        wait_ready(port + 1)  # worker 1: the next port
        pids = service.wait_for("health endpoints on", count=2)
        assert len(pids) == 2
        await admin.put_many(queue, [json.dumps({"n": i}).encode() for i in range(100)])
        service.wait_for("app: handled", count=20)
        # kill worker 1 (the process serving port+1) the hard way
        victim = _pid_listening_on(port + 1)
        os.kill(victim, signal.SIGKILL)
        service.wait_for("restarting", timeout=30)
        wait_ready(port + 1, timeout=60)  # restarted: serving again
        await admin.put_many(queue, [json.dumps({"n": i}).encode() for i in range(100, 200)])
        # every id handled before the stop (an empty queue is not enough: the workers'
        # prefetched messages are off its count, and a drain gives those back unhandled)
        service.wait_until(
            lambda lines: _handled(lines) >= {str(i) for i in range(200)},
            "every id handled",
            timeout=60,
        )
        service.wait_for("handled/s")  # the status lines
        assert service.stop() == 0, "\n".join(service.lines)
    finally:
        service.kill()
    assert _handled(service.lines) == {str(i) for i in range(200)}  # duplicates allowed
    assert await admin.count(queue) == 0
    assert readyz(port) == 0 and readyz(port + 1) == 0


def _handled(lines: list[str]) -> set[str]:
    return {line.rsplit(" ", 1)[-1] for line in lines if "app: handled" in line}


def _pid_listening_on(port: int) -> int:
    """The pid of the process with a listening socket on ``port`` (from /proc)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            inode = fields[9]
            break
    assert inode is not None, f"nothing listens on {port}"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) == f"socket:[{inode}]":
                    return int(proc.name)
        except OSError:
            continue
    raise AssertionError(f"no process owns the socket on {port}")
