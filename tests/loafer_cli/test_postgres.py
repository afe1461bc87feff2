"""``loafer postgres init`` (create, print, drop the tables) and a config file's postgres
route through ``loafer check``, ``publish`` and ``asyncapi``, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.loafer_cli.runner import loafer

pytestmark = pytest.mark.postgres


async def _tables(url: str, schema: str) -> set[str]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
        return {r["table_name"] for r in rows}
    finally:
        await conn.close()


async def _drop(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def schema(postgres_url: str) -> object:
    name = f"loafer_cli_{uuid.uuid4().hex[:10]}"
    yield name
    asyncio.run(_drop(postgres_url, name))


def test_print_sql_connects_to_nothing() -> None:
    done = loafer("postgres", "init", "--print-sql", "--schema", "app", "--table", "jobs")
    assert done.returncode == 0, done.stderr
    assert 'CREATE TABLE IF NOT EXISTS "app"."jobs"' in done.stdout
    assert '"app"."jobs_dead"' in done.stdout and '"app"."loafer_inbox"' in done.stdout
    assert "loafer_outbox" not in done.stdout


def test_init_creates_the_tables_idempotently_and_drop_drops_them(
    postgres_url: str, schema: str
) -> None:
    for _ in range(2):
        done = loafer("postgres", "init", "--url", postgres_url, "--schema", schema)
        assert done.returncode == 0, done.stderr
    assert f"created {schema}.loafer_queue, {schema}.loafer_outbox" in done.stdout
    assert asyncio.run(_tables(postgres_url, schema)) == {
        "loafer_queue",
        "loafer_queue_dead",
        "loafer_outbox",
        "loafer_outbox_dead",
        "loafer_inbox",
    }
    env = {"LOAFER_POSTGRES_URL": postgres_url}
    done = loafer("postgres", "init", "--schema", schema, "--drop", env=env)
    assert done.returncode == 0, done.stderr
    assert asyncio.run(_tables(postgres_url, schema)) == set()


def test_bad_input_says_what_to_fix() -> None:
    done = loafer("postgres", "init", env={"LOAFER_POSTGRES_URL": ""})
    assert done.returncode == 78 and "--url" in done.stderr
    done = loafer("postgres", "init", "--url", "postgresql://u@h/db", "--schema", "Bad-Name")
    assert done.returncode == 1 and "schema name 'Bad-Name'" in done.stderr
    done = loafer("postgres", "init", "--url", "postgresql://u:pw@127.0.0.1:1/db")
    assert done.returncode == 1 and "pw" not in done.stderr.replace("postgresql", "")


def test_a_config_file_route_is_checked_published_to_and_described(
    postgres_url: str, schema: str, tmp_path: Path
) -> None:
    config = tmp_path / "loafer.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [[routes]]
            name = "jobs"
            provider = "postgres"
            queue = "jobs"
            handler = "tests.loafer_cli.config_app:handle"
            [routes.provider_options]
            url = "{postgres_url}"
            schema = "{schema}"
            lease = 10
            """
        ),
        encoding="utf-8",
    )
    missing = loafer("check", "--config", str(config))
    assert missing.returncode != 0
    assert "loafer postgres init" in missing.stdout + missing.stderr
    assert loafer("postgres", "init", "--url", postgres_url, "--schema", schema).returncode == 0
    checked = loafer("check", "--config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    published = loafer(
        "publish", "postgres", "jobs", '{"n": 1}', "--url", postgres_url, "-o", f"schema={schema}"
    )
    assert published.returncode == 0 and "1 confirmed" in published.stdout, published.stderr
    document = loafer("asyncapi", "--config", str(config))
    assert document.returncode == 0, document.stderr
    doc = json.loads(document.stdout)
    (server,) = doc["servers"].values()
    assert server["protocol"] == "postgresql" and server["host"] == "127.0.0.1:5432"
    (channel,) = doc["channels"].values()
    assert channel["address"] == "jobs"
