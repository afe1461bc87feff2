"""A relay from a config file: ``loafer run --config`` relays, ``loafer check`` verifies
the outbox table and the relay's publishers."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from loafer_postgres.outbox import Outbox
from tests.loafer_cli.runner import Service, loafer
from tests.loafer_postgres._outbox_fixtures import PgSchema, pgo
from tests.loafer_rabbit.conftest import RabbitAdmin, open_admin

__all__ = ["pgo"]

pytestmark = [pytest.mark.postgres, pytest.mark.rabbit]

CONFIG = textwrap.dedent(
    """
    [manager]
    shutdown_timeout = 5

    [publishers.orders]
    publisher = "rabbit"
    target = "${QUEUE}"
    url = "${RABBIT_URL}"

    [[routes]]
    name = "outbox-relay"
    provider = "postgres"
    queue = "default"
    handler = "loafer_postgres.relay:relay"
    translator = false
    publish_to = ["orders"]

    [routes.provider_options]
    url = "${POSTGRES_URL}"
    schema = "${SCHEMA}"
    table = "loafer_outbox"
    poll_interval = 1
    """
)


@pytest.fixture
async def rabbit(rabbit_url: str) -> AsyncIterator[RabbitAdmin]:
    async with open_admin(rabbit_url) as helper:
        yield helper


def project(tmp_path: Path) -> Path:
    (tmp_path / "loafer.toml").write_text(CONFIG)
    return tmp_path


async def test_loafer_run_relays_from_a_config_file(
    pgo: PgSchema, rabbit: RabbitAdmin, rabbit_url: str, tmp_path: Path
) -> None:
    queue = await rabbit.declare()
    async with pgo.pool.acquire() as conn, conn.transaction():
        await Outbox(schema=pgo.name).publish(conn, "orders", {"n": 1})
    env = {"QUEUE": queue, "RABBIT_URL": rabbit_url, "POSTGRES_URL": pgo.url, "SCHEMA": pgo.name}
    service = Service(["--config", "loafer.toml"], cwd=project(tmp_path), env=env)
    try:
        await rabbit.wait_count(queue, 1, timeout=30)
        assert service.stop() == 0, service.output
    finally:
        service.kill()
    (message,) = await rabbit.drain(queue)
    assert json.loads(message.body) == {"n": 1}
    assert await pgo.count() == 0


async def test_loafer_check_verifies_the_outbox_table_and_the_publishers(
    pgo: PgSchema, rabbit: RabbitAdmin, rabbit_url: str, tmp_path: Path
) -> None:
    queue = await rabbit.declare()
    env = {"QUEUE": queue, "RABBIT_URL": rabbit_url, "POSTGRES_URL": pgo.url, "SCHEMA": pgo.name}
    root = project(tmp_path)
    done = loafer("check", "--config", "loafer.toml", cwd=root, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outbox-relay" in done.stdout and "OK" in done.stdout

    missing = loafer("check", cwd=root, env={**env, "SCHEMA": "loafer_pgo_missing"})
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "loafer postgres init" in missing.stdout + missing.stderr

    refused = rabbit_url.replace("guest:guest@", "guest:wrong-password@")
    bad = loafer("check", "--timeout", "15", cwd=root, env={**env, "RABBIT_URL": refused})
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "publish_to 'orders'" in bad.stdout + bad.stderr
    assert "wrong-password" not in bad.stdout + bad.stderr


INBOX_APP = textwrap.dedent(
    """
    import os

    from loafer_postgres.inbox import Inbox

    inbox = Inbox(os.environ["POSTGRES_URL"], schema=os.environ["SCHEMA"])


    async def handle(message, metadata):
        await inbox.connection().execute("SELECT 1")
    """
)

INBOX_CONFIG = textwrap.dedent(
    """
    [[routes]]
    name = "orders"
    provider = "rabbit"
    queue = "${QUEUE}"
    handler = "inboxapp:handle"
    middleware = ["inboxapp:inbox"]

    [routes.provider_options]
    url = "${RABBIT_URL}"
    """
)


async def test_loafer_check_verifies_an_inbox_middleware_table(
    pgo: PgSchema, rabbit: RabbitAdmin, rabbit_url: str, tmp_path: Path
) -> None:
    queue = await rabbit.declare()
    (tmp_path / "inboxapp.py").write_text(INBOX_APP)
    (tmp_path / "loafer.toml").write_text(INBOX_CONFIG)
    env = {"QUEUE": queue, "RABBIT_URL": rabbit_url, "POSTGRES_URL": pgo.url, "SCHEMA": pgo.name}
    done = loafer("check", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    missing = loafer("check", cwd=tmp_path, env={**env, "SCHEMA": "loafer_pgo_missing"})
    assert missing.returncode == 1, missing.stdout + missing.stderr
    out = missing.stdout + missing.stderr
    assert "middleware Inbox" in out and "loafer postgres init" in out
