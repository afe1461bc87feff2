"""``loafer run --metrics-port``: Prometheus /metrics of a real RabbitMQ service, scraped
over HTTP; with ``--workers 2`` the parent serves both workers' numbers summed."""

from __future__ import annotations

import json
import socket
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tests.loafer_cli.runner import Service, loafer
from tests.loafer_rabbit.conftest import RabbitAdmin
from tests.scrape import Samples, scrape_now, value

pytestmark = pytest.mark.rabbit

APP = textwrap.dedent(
    """
    import logging
    import os

    from loafer_core import Route
    from loafer_rabbit import RabbitProvider

    log = logging.getLogger("app")


    async def handler(message, metadata):
        log.info("handled %s by %d", message["n"], os.getpid())


    routes = [
        Route(
            RabbitProvider(os.environ["QUEUE"], url=os.environ["RABBIT_URL"]),
            handler,
            name="work",
        )
    ]
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepted(port: int, expected: int, timeout: float = 30) -> Samples:
    """Scrape until ``expected`` deliveries are counted as received and accepted (workers
    record their status every second): polling an HTTP endpoint, nothing to await."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape_now(port)
        got = (
            value(samples, "loafer_messages_settled_total", **LABELS, outcome="accept"),
            value(samples, "loafer_messages_received_total", **LABELS),
        )
        if got == (expected, expected) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


LABELS = {"route": "work", "provider": "rabbit"}


def _metric_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("loafer-metrics-*"))


def _run(tmp_path: Path, queue: str, rabbit_url: str, *args: str) -> Service:
    (tmp_path / "app.py").write_text(APP)
    return Service(
        ["app:routes", "--shutdown-timeout", "5", *args],
        cwd=tmp_path,
        env={"QUEUE": queue, "RABBIT_URL": rabbit_url},
    )


async def test_one_process_serves_its_metrics(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await admin.declare()
    port = _free_port()
    service = _run(tmp_path, queue, rabbit_url, "--metrics-port", str(port))
    try:
        service.wait_for("Prometheus metrics on")
        service.wait_for("consuming")
        await admin.put_many(queue, [json.dumps({"n": i}).encode() for i in range(20)])
        service.wait_for("app: handled", count=20)
        samples = _accepted(port, 20)
        assert service.stop() == 0, "\n".join(service.lines)
    finally:
        service.kill()
    assert value(samples, "loafer_messages_received_total", **LABELS) == 20
    assert value(samples, "loafer_messages_settled_total", **LABELS, outcome="accept") == 20
    assert value(samples, "loafer_handler_duration_seconds_count", **LABELS) == 20
    assert value(samples, "loafer_messages_in_flight", **LABELS) == 0


async def test_two_workers_numbers_are_summed(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await admin.declare()
    port = _free_port()
    dirs = _metric_dirs()
    service = _run(tmp_path, queue, rabbit_url, "--workers", "2", "--metrics-port", str(port))
    try:
        service.wait_for("Prometheus metrics of every worker")
        service.wait_for("consuming", count=2)
        await admin.put_many(queue, [json.dumps({"n": i}).encode() for i in range(200)])
        handled = service.wait_for("app: handled", count=200, timeout=60)
        samples = _accepted(port, 200)
        assert service.stop() == 0, "\n".join(service.lines)
    finally:
        service.kill()
    assert _metric_dirs() <= dirs  # the workers' files are removed at exit
    pids = {line.rsplit(" ", 1)[-1] for line in handled}
    assert len(pids) == 2, "one worker handled everything: nothing to sum"
    assert value(samples, "loafer_messages_received_total", **LABELS) == 200
    assert value(samples, "loafer_messages_settled_total", **LABELS, outcome="accept") == 200
    assert value(samples, "loafer_handler_duration_seconds_count", **LABELS) == 200
    assert value(samples, "loafer_messages_in_flight", **LABELS) == 0
    backlog = value(samples, "loafer_queue_backlog", **LABELS)  # read at start, every 15 s
    assert backlog is not None and 0 <= backlog <= 200


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_metrics_port_exits_78_with_one_clear_line(
    tmp_path: Path, rabbit_url: str, workers: str
) -> None:
    (tmp_path / "app.py").write_text(APP)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = loafer(
            "run",
            "app:routes",
            "--workers",
            workers,
            "--metrics-port",
            str(port),
            cwd=tmp_path,
            env={"QUEUE": "loafer-metrics-never-used", "RABBIT_URL": rabbit_url},
        )
    assert done.returncode == 78, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("loafer: error:")]
    assert errors == [errors[0]] and f"cannot listen on 0.0.0.0:{port}" in errors[0]
    assert "choose another metrics port" in errors[0]
