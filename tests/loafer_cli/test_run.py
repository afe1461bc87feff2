"""``loafer run``: targets, exit codes, JSON log lines, a real RabbitMQ round trip."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.loafer_cli.runner import Service, loafer
from tests.loafer_rabbit.conftest import RabbitAdmin

APP = textwrap.dedent(
    """
    import logging
    import os

    from loafer_core import Route
    from loafer_rabbit import RabbitProvider

    log = logging.getLogger("app")


    async def handler(message, metadata):
        log.info("handled %s", message["n"], extra={"n": message["n"]})


    def provider():
        return RabbitProvider(os.environ["QUEUE"], url=os.environ["RABBIT_URL"])


    routes = [Route(provider(), handler, name="work")]


    def make_routes():
        return [Route(provider(), handler, name="work")]


    async def make_routes_async():
        return [Route(provider(), handler, name="work")]


    def make_manager():
        from loafer_core import Manager

        return Manager(make_routes(), shutdown_timeout=5)


    async def make_manager_async():
        return make_manager()


    not_routes = 42
    """
)


def write_app(tmp_path: Path, name: str = "app") -> Path:
    (tmp_path / f"{name}.py").write_text(APP)
    return tmp_path


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("nosuchmodule:routes", "cannot import module 'nosuchmodule': no such module"),
        ("app:missing", "module 'app' has no attribute 'missing'"),
        ("app:not_routes", "it is a int; expected a Manager"),
        ("app", "expected MODULE:ATTR"),
    ],
)
def test_a_bad_target_exits_78_with_one_clear_line(
    tmp_path: Path, target: str, expected: str
) -> None:
    write_app(tmp_path)
    done = loafer(
        "run", target, cwd=tmp_path, env={"QUEUE": "q", "RABBIT_URL": "amqp://localhost/"}
    )
    assert done.returncode == 78, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("loafer: error: ")
    assert expected in lines[0]


def test_a_module_importing_something_missing_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import not_installed_anywhere\nroutes = []\n")
    done = loafer("run", "broken:routes", cwd=tmp_path)
    assert done.returncode == 78
    assert "it imports 'not_installed_anywhere', which is not installed" in done.stderr


@pytest.mark.rabbit
@pytest.mark.parametrize(
    "attr", ["routes", "make_routes", "make_routes_async", "make_manager", "make_manager_async"]
)
async def test_run_handles_published_messages_and_drains_on_sigterm(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str, attr: str
) -> None:
    queue = await admin.declare()
    await admin.put_many(queue, [json.dumps({"n": i}).encode() for i in range(5)])
    service = Service(
        [f"app:{attr}", "--shutdown-timeout", "5"],
        cwd=write_app(tmp_path),
        env={"QUEUE": queue, "RABBIT_URL": rabbit_url},
    )
    try:
        handled = service.wait_for("handled", count=5)
        assert sorted(line.rsplit(" ", 1)[-1] for line in handled) == [str(i) for i in range(5)]
        assert service.stop() == 0, "\n".join(service.lines)
    finally:
        service.kill()
    assert await admin.count(queue) == 0
    assert any("drained; exiting" in line for line in service.lines)


@pytest.mark.rabbit
async def test_json_log_format_gives_one_parseable_object_per_line(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await admin.declare()
    await admin.put(queue, json.dumps({"n": 7}).encode())
    service = Service(
        ["app:routes", "--log-format", "json"],
        cwd=write_app(tmp_path),
        env={"QUEUE": queue, "RABBIT_URL": rabbit_url},
    )
    try:
        service.wait_for("handled")
        assert service.stop() == 0
    finally:
        service.kill()
    records = [json.loads(line) for line in service.lines if line.strip()]
    handled = [r for r in records if r["message"] == "handled 7"]
    assert len(handled) == 1
    record = handled[0]
    assert record["level"] == "INFO"
    assert record["logger"] == "app"
    assert record["n"] == 7  # an extra= field
    assert record["time"].endswith("+00:00")
    assert any(r["logger"] == "loafer_core.manager" for r in records)


def test_json_lines_carry_the_traceback_text(tmp_path: Path) -> None:
    (tmp_path / "boom.py").write_text(
        textwrap.dedent(
            """
            import logging

            def routes():
                try:
                    raise ValueError("boom")
                except ValueError:
                    logging.getLogger("boom").exception("failed", extra={"k": "v"})
                return 42
            """
        )
    )
    done = loafer("run", "boom:routes", "--log-format", "json", cwd=tmp_path)
    assert done.returncode == 78
    lines = done.stderr.strip().splitlines()
    record = json.loads(lines[0])
    assert record["message"] == "failed"
    assert record["k"] == "v"
    assert "ValueError: boom" in record["exc_info"]
    assert lines[1].startswith("loafer: error: target 'boom:routes'")


@pytest.mark.rabbit
async def test_reload_restarts_the_service_when_its_source_changes(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str
) -> None:
    pytest.importorskip("watchfiles")
    queue = await admin.declare()
    await admin.put(queue, json.dumps({"n": 1}).encode())
    service = Service(
        ["app:routes", "--reload", "--shutdown-timeout", "5"],
        cwd=write_app(tmp_path),
        env={"QUEUE": queue, "RABBIT_URL": rabbit_url},
    )
    try:
        service.wait_for("handled 1")
        (tmp_path / "app.py").write_text(APP.replace('"handled %s"', '"handled again %s"'))
        service.wait_for("drained; exiting")  # the first process stopped on the change
        service.wait_for(": consuming", count=2)  # and the second one consumes
        await admin.put(queue, json.dumps({"n": 2}).encode())
        service.wait_for("handled again 2")
        assert service.stop() == 0, "\n".join(service.lines)
    finally:
        service.kill()
    assert await admin.count(queue) == 0
    assert sum("drained; exiting" in line for line in service.lines) == 2


def test_reload_without_watchfiles_names_the_extra(tmp_path: Path) -> None:
    # a module named watchfiles that fails to import stands in for a missing extra
    (tmp_path / "watchfiles.py").write_text("raise ImportError('not installed')\n")
    done = loafer("run", "app:routes", "--reload", env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 78
    assert "--reload needs watchfiles: pip install 'loafer-core[reload]'" in done.stderr


@pytest.mark.rabbit
def test_a_fatal_route_error_at_start_exits_78(tmp_path: Path, rabbit_url: str) -> None:
    queue = "loafer-cli-no-such-queue"
    done = loafer(
        "run", "app:routes", cwd=write_app(tmp_path), env={"QUEUE": queue, "RABBIT_URL": rabbit_url}
    )
    assert done.returncode == 78, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("loafer: error: ")
    assert f"RabbitMQ queue '{queue}' does not exist" in last


@pytest.mark.memory
def test_a_crash_exits_1_with_its_traceback_logged(tmp_path: Path) -> None:
    (tmp_path / "crash.py").write_text(
        textwrap.dedent(
            """
            from loafer_core import Manager, Route
            from loafer_core.memory import MemoryBroker, MemoryProvider


            class Crashing(Manager):
                def run(self, forever=True):
                    raise RuntimeError("the event loop broke")


            broker = MemoryBroker()
            broker.declare("q")
            manager = Crashing([Route(MemoryProvider(broker, "q"), lambda m, md: None)])
            """
        )
    )
    done = loafer("run", "crash:manager", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "loafer run crashed" in done.stderr
    assert "RuntimeError: the event loop broke" in done.stderr
    assert "loafer: error:" not in done.stderr
