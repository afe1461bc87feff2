"""``loafer run``'s live table: drawn on a terminal (a pseudo-terminal here), not when
piped, nor with ``--no-live`` or JSON logs; and its rows rendered from route statuses."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from loafer_cli.live import COLUMNS, RateMeter, route_row, status_table, wanted
from loafer_core.status import RouteState, RouteStatus
from tests.loafer_cli.runner import SCRIPT, Service

APP = textwrap.dedent(
    """
    import logging

    from loafer_core import ACCEPT, REJECT, Route
    from loafer_core.memory import MemoryBroker, MemoryProvider

    log = logging.getLogger("app")
    broker = MemoryBroker()
    broker.publish_many("orders", ["ok", "ok", "ok", "bad", "oops"])


    async def handle(message, metadata):
        log.info("handled %s [not markup]", message)
        if message == "bad":
            return REJECT("bad input")
        if message == "oops":
            raise ValueError("the handler broke")
        return ACCEPT


    routes = [
        Route(MemoryProvider(broker, "orders", wait=0.2), handle, name="orders", max_attempts=1)
    ]
    """
)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def _lines(raw: bytes) -> list[str]:
    """The text lines of terminal output: escape sequences removed, split at CR and LF."""
    text = _ANSI.sub("", raw.decode("utf-8", "replace"))
    return [line for line in re.split(r"[\r\n]", text) if line.strip()]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split("[│┃]", line.strip().strip("│┃"))]


def _orders_rows(lines: list[str]) -> list[list[str]]:
    return [_cells(line) for line in lines if line.startswith("│ orders ")]


class Terminal:
    """``loafer run ARGS`` with stdin, stdout and stderr on a pseudo-terminal of 200
    columns; its output read from the master side."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        env["TERM"] = "xterm-256color"
        try:
            self.process = subprocess.Popen(
                [SCRIPT, "run", *args],
                cwd=cwd,
                env=env,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
            )
        finally:
            os.close(slave)
        self.master = master
        self.output = b""

    def _read(self, timeout: float) -> bool:
        """Read what is there within ``timeout`` seconds; False at the end of output."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: every slave side closed (the process ended)
            return False
        self.output += chunk
        return bool(chunk)

    def wait_for(self, found: Callable[[list[str]], bool], what: str, timeout: float = 30) -> None:
        """Read until ``found(lines)`` is true (at most ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while not found(_lines(self.output)):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(min(remaining, 1.0)):
                raise AssertionError(f"{what} not seen:\n" + "\n".join(_lines(self.output)))

    def wait(self, timeout: float = 30) -> int:
        """Read the rest of the output (at most ``timeout`` seconds); the exit code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(deadline - time.monotonic()):
            pass
        return self.process.wait(max(deadline - time.monotonic(), 1))

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM; read the rest of the output; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        os.close(self.master)


def _settled(rows: list[list[str]]) -> bool:
    # route, state, handled/s, in flight, received, ACCEPT, RETRY, REJECT, RELEASE, errors
    return any(row[3:10] == ["0", "5", "3", "0", "2", "0", "1"] for row in rows)


@pytest.mark.memory
def test_on_a_terminal_run_draws_the_table_under_the_log_lines(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    terminal = Terminal(["app:routes", "--shutdown-timeout", "5"], tmp_path)
    try:
        terminal.wait_for(
            lambda lines: _settled(_orders_rows(lines)), "the row of 5 handled messages"
        )
        lines = _lines(terminal.output)
        header = next(line for line in lines if line.startswith("┃ route "))
        assert _cells(header) == list(COLUMNS)
        row = next(row for row in _orders_rows(lines) if _settled([row]))
        assert row[1] == "running"
        assert row[10] == "ValueError: the handler broke"
        # the log lines are whole lines, above the table, not garbled by it
        handled = [line for line in lines if " INFO app: handled " in line]
        assert sorted(line.split(": handled ")[1] for line in handled) == [
            f"{m} [not markup]" for m in ("bad", "ok", "ok", "ok", "oops")
        ]
        assert terminal.stop() == 0, "\n".join(_lines(terminal.output))
    finally:
        terminal.close()
    lines = _lines(terminal.output)
    # the table's last drawing shows the route stopped; the summary and the last line
    # are logged as ever
    assert _orders_rows(lines)[-1][1] == "stopped"
    assert any("route 'orders': stopped" in line for line in lines)
    assert lines[-1].endswith("INFO loafer_cli: drained; exiting")


@pytest.mark.memory
def test_a_fatal_error_leaves_the_failed_row_then_the_error_line(tmp_path: Path) -> None:
    (tmp_path / "gone.py").write_text(
        textwrap.dedent(
            """
            from loafer_core import Route
            from loafer_core.memory import MemoryBroker, MemoryProvider

            routes = [Route(MemoryProvider(MemoryBroker(), "missing"), print, name="orders")]
            """
        )
    )
    terminal = Terminal(["gone:routes"], tmp_path)
    try:
        rc = terminal.wait()
    finally:
        terminal.close()
    assert rc == 78, terminal.output.decode()
    lines = _lines(terminal.output)
    row = _orders_rows(lines)[-1]
    assert row[1] == "failed"
    assert row[10].startswith("ConfigurationError: ")
    assert lines[-1].startswith("loafer: error: ")


@pytest.mark.memory
@pytest.mark.parametrize(
    "option", [["--no-live"], ["--log-format", "json"], ["--reload", "--no-live"]]
)
def test_no_table_with_no_live_or_json_logs_even_on_a_terminal(
    tmp_path: Path, option: list[str]
) -> None:
    (tmp_path / "app.py").write_text(APP)
    terminal = Terminal(["app:routes", *option], tmp_path)
    try:
        terminal.wait_for(
            lambda lines: sum("handled" in line for line in lines) >= 5, "5 handled lines"
        )
        assert terminal.stop() == 0
    finally:
        terminal.close()
    text = terminal.output.decode()
    assert "drained; exiting" in text
    assert "│" not in text and "┃" not in text


@pytest.mark.memory
def test_piped_run_logs_plain_lines_only(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    service = Service(["app:routes"], cwd=tmp_path, env={})
    try:
        service.wait_for("handled", count=5)
        assert service.stop() == 0, "\n".join(service.lines)
    finally:
        service.kill()
    assert not any("│" in line or "┃" in line or "\x1b" in line for line in service.lines)
    assert service.lines[-1].endswith("INFO loafer_cli: drained; exiting")


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_wanted_on_a_terminal_with_plain_logs_outside_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LOAFER_WORKER", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr("sys.stderr", _Stream(True))
    assert wanted(log_format="plain", no_live=False)
    monkeypatch.setenv("TERM", "dumb")
    assert not wanted(log_format="plain", no_live=False)
    monkeypatch.setenv("TERM", "xterm")
    assert not wanted(log_format="plain", no_live=True)
    assert not wanted(log_format="json", no_live=False)
    monkeypatch.setenv("LOAFER_WORKER", "0")
    assert not wanted(log_format="plain", no_live=False)
    monkeypatch.delenv("LOAFER_WORKER")
    monkeypatch.setattr("sys.stderr", _Stream(False))
    assert not wanted(log_format="plain", no_live=False)


def _render(status: RouteStatus, rate: float | None) -> list[str]:
    return [cell.plain for cell in route_row(status, rate)]


def test_a_row_shows_the_counters_of_a_route() -> None:
    status = RouteStatus(
        "orders",
        RouteState.RUNNING,
        in_flight=3,
        received=120,
        settled={"ACCEPT": 110, "RETRY": 4, "REJECT": 2, "RELEASE": 1},
        message_errors=6,
        last_message_error="KeyError: 'id'",
    )
    assert _render(status, 12.345) == [
        "orders",
        "running",
        "12.3",
        "3",
        "120",
        "110",
        "4",
        "2",
        "1",
        "6",
        "KeyError: 'id'",
    ]
    cells = route_row(status, None)
    assert cells[2].plain == "-"  # not measured yet
    assert cells[1].style == "green"


def test_a_row_shows_failures_stuck_threads_and_a_truncated_error() -> None:
    backing_off = RouteStatus(
        "orders",
        RouteState.BACKING_OFF,
        failures=3,
        error="ConnectionError: " + "refused\n" * 40,
        last_message_error="KeyError: 'id'",
    )
    cells = route_row(backing_off, 0.0)
    assert cells[1].plain == "backing_off (3)"
    assert cells[1].style == "yellow"
    error = cells[10].plain
    assert error.startswith("ConnectionError: refused refused") and error.endswith("…")
    assert len(error) == 60 and "\n" not in error  # the route's error before the message's
    stalled = route_row(RouteStatus("x", RouteState.STALLED, stuck_handlers=2), None)
    assert stalled[1].plain == "stalled, 2 stuck"
    failed = route_row(RouteStatus("x", RouteState.FAILED, error="ConfigurationError: gone"), 0)
    assert failed[1].style == "bold red"
    assert failed[10].plain == "ConfigurationError: gone"
    assert [cell.plain for cell in failed[5:9]] == ["0", "0", "0", "0"]


def test_the_table_has_a_header_and_a_row_per_route() -> None:
    statuses = [RouteStatus("a", RouteState.RUNNING), RouteStatus("b", RouteState.STOPPED)]
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    with console.file:
        console.print(status_table(statuses, {"a": 1.5}))
    text = console.export_text()
    lines = _lines(text.encode())
    assert _cells(next(line for line in lines if line.startswith("┃"))) == list(COLUMNS)
    rows = [_cells(line) for line in lines if line.startswith("│")]
    assert [row[:3] for row in rows] == [["a", "running", "1.5"], ["b", "stopped", "-"]]


def test_the_rate_is_over_the_last_seconds() -> None:
    meter = RateMeter(window=5.0)

    def at(settled: int) -> list[RouteStatus]:
        return [RouteStatus("r", RouteState.RUNNING, settled={"ACCEPT": settled})]

    assert meter.update(at(0), 100.0) == {"r": None}
    assert meter.update(at(10), 101.0) == {"r": 10.0}
    assert meter.update(at(30), 102.0) == {"r": 15.0}
    for t in range(103, 108):
        meter.update(at(30), float(t))
    # the samples older than the window are gone: nothing settled in the last 5 s
    assert meter.update(at(30), 108.0) == {"r": 0.0}
    assert meter.update(at(40), 109.0) == {"r": 2.0}
