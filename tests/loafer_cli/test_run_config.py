"""``loafer run --config`` and ``loafer check --config``: routes from a config file."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.loafer_cli.runner import Service, loafer
from tests.loafer_rabbit.conftest import RabbitAdmin

pytest.importorskip("loafer_cli.config", reason="the config-file module is not installed")

HANDLERS = textwrap.dedent(
    """
    import logging

    log = logging.getLogger("handlers")


    async def handle(message, metadata):
        log.info("handled %s", message["n"])
    """
)

CONFIG = textwrap.dedent(
    """
    [manager]
    shutdown_timeout = 5

    [[routes]]
    name = "work"
    provider = "rabbit"
    queue = "${QUEUE}"
    handler = "handlers:handle"

    [routes.provider_options]
    url = "${RABBIT_URL}"
    """
)


def _project(tmp_path: Path, config: str = CONFIG) -> Path:
    (tmp_path / "handlers.py").write_text(HANDLERS)
    (tmp_path / "loafer.toml").write_text(config)
    return tmp_path


@pytest.mark.rabbit
@pytest.mark.parametrize("args", [["--config", "loafer.toml"], []], ids=["given", "found"])
async def test_run_from_a_config_file_handles_messages_and_drains(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str, args: list[str]
) -> None:
    queue = await admin.declare()
    await admin.put_many(queue, [json.dumps({"n": i}).encode() for i in range(3)])
    service = Service(args, cwd=_project(tmp_path), env={"QUEUE": queue, "RABBIT_URL": rabbit_url})
    try:
        service.wait_for("handled", count=3)
        assert service.stop() == 0, "\n".join(service.lines)
    finally:
        service.kill()
    assert await admin.count(queue) == 0


@pytest.mark.rabbit
async def test_check_from_a_config_file(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await admin.declare()
    env = {"RABBIT_URL": rabbit_url}
    done = loafer(
        "check", "--config", "loafer.toml", cwd=_project(tmp_path), env={**env, "QUEUE": queue}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "work" in done.stdout and "OK" in done.stdout
    done = loafer("check", cwd=tmp_path, env={**env, "QUEUE": f"{queue}-missing"})
    assert done.returncode == 1
    assert f"{queue}-missing" in done.stderr


def test_a_bad_config_file_exits_78_naming_file_route_and_key(tmp_path: Path) -> None:
    _project(tmp_path, CONFIG.replace("queue =", "queu ="))
    done = loafer(
        "run",
        "--config",
        "loafer.toml",
        cwd=tmp_path,
        env={"QUEUE": "q", "RABBIT_URL": "amqp://x/"},
    )
    assert done.returncode == 78
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("loafer: error: ")
    assert "loafer.toml" in lines[0] and "routes[0] ('work')" in lines[0] and "queu" in lines[0]


def test_target_and_config_together_or_neither_is_a_usage_error(tmp_path: Path) -> None:
    done = loafer("run", "app:routes", "--config", "loafer.toml", cwd=tmp_path)
    assert done.returncode == 78
    assert "give MODULE:ATTR or --config, not both" in done.stderr
    done = loafer("run", cwd=tmp_path)
    assert done.returncode == 78
    assert "nothing to run" in done.stderr
