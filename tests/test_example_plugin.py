"""The plugin author's path, end to end: the example plugin
(``examples/loafer-provider-example``) installed in a fresh virtual environment with only
loafer-core (no extra, so no other plugin's library), where it passes the whole
conformance kit, ``loafer providers`` lists it and a config file's route names it.

The kit runs twice: without pytest-asyncio and with it (most third parties have it).
Uses ``uv`` when it is on PATH or in ``.tools/`` (seconds), else ``python -m venv`` and
pip (slower).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "loafer-provider-example"
#: bound on each step (creating the environment, installing, running the example's tests)
STEP_TIMEOUT = 240


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["COLUMNS"] = "200"  # Rich tables unwrapped
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _uv() -> list[str | Path] | None:
    """uv on PATH, else the one scripts/test.sh installs in .tools/, else uv in this venv."""
    if shutil.which("uv") is not None:
        return ["uv"]
    if (ROOT / ".tools" / "uv" / "bin" / "uv").exists():
        return [ROOT / ".tools" / "uv" / "bin" / "uv"]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    return None


def _make_venv(where: Path, *extra: str) -> Path:
    """A fresh environment with loafer-core (no extras), the example (with pytest) and
    ``extra`` packages."""
    python = where / "bin" / "python"
    packages = [str(ROOT), f"{EXAMPLE}[test]", *extra]
    uv = _uv()
    if uv is not None:
        _ok(_run(*uv, "venv", "-q", "--python", sys.executable, where))
        _ok(_run(*uv, "pip", "install", "-q", "--python", python, *packages))
    else:
        _ok(_run(sys.executable, "-m", "venv", where))
        _ok(_run(python, "-m", "pip", "install", "-q", *packages))
    return where


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment with loafer-core (no extras) and the example (with pytest)."""
    return _make_venv(tmp_path_factory.mktemp("example-plugin") / "venv")


@pytest.fixture(scope="module")
def venv_with_pytest_asyncio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same, plus pytest-asyncio: what a third party copying the example almost
    always has (its start-up deprecation warning must not stop the run)."""
    return _make_venv(tmp_path_factory.mktemp("example-plugin-asyncio") / "venv", "pytest-asyncio")


def test_no_other_plugins_library_is_there(venv: Path) -> None:
    code = (
        "import importlib.util as u; "
        "print([m for m in ('aio_pika', 'proton', 'aiobotocore') if u.find_spec(m)])"
    )
    assert _ok(_run(venv / "bin" / "python", "-c", code)).strip() == "[]"


def _passes_the_kit(venv: Path) -> None:
    out = _ok(
        _run(venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=EXAMPLE)
    )
    assert " passed" in out and "failed" not in out and "INTERNALERROR" not in out, out


def test_the_example_passes_the_kit_there(venv: Path) -> None:
    code = "import importlib.util as u; print(u.find_spec('pytest_asyncio') is None)"
    assert _ok(_run(venv / "bin" / "python", "-c", code)).strip() == "True"
    _passes_the_kit(venv)


def test_the_example_passes_the_kit_with_pytest_asyncio_installed(
    venv_with_pytest_asyncio: Path,
) -> None:
    code = "import importlib.util as u; print(u.find_spec('pytest_asyncio') is not None)"
    assert _ok(_run(venv_with_pytest_asyncio / "bin" / "python", "-c", code)).strip() == "True"
    _passes_the_kit(venv_with_pytest_asyncio)


def test_loafer_providers_lists_it_with_its_capabilities(venv: Path) -> None:
    out = _ok(_run(venv / "bin" / "loafer", "providers"))
    assert "sqlite-example" in out and "loafer-provider-example" in out, out
    assert "dead_letter (native)" in out, out


def test_a_route_in_a_config_file_names_it(venv: Path, tmp_path: Path) -> None:
    """``provider = "sqlite-example"`` in loafer.toml: ``loafer check`` builds the route,
    verifies the queue (exit 0), and fails naming what to do when the queue is missing."""
    database = tmp_path / "queues.db"
    config = tmp_path / "loafer.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [[routes]]
            name = "jobs"
            provider = "sqlite-example"
            queue = "jobs"
            handler = "loafer_sqlite_example.demo:show"
            max_attempts = 5

            [routes.provider_options]
            path = "{database}"
            lease = 10
            """
        )
    )
    python, loafer = venv / "bin" / "python", venv / "bin" / "loafer"
    missing = _run(loafer, "check", "--config", config, cwd=tmp_path)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "no database file" in missing.stdout + missing.stderr
    assert "create it with" in missing.stdout + missing.stderr
    setup = (
        f"from loafer_sqlite_example import create_queue; create_queue({str(database)!r}, 'jobs')"
    )
    _ok(_run(python, "-c", setup))
    out = _ok(_run(loafer, "check", "--config", config, cwd=tmp_path))
    assert "sqlite-example:queues.db#jobs" in out and "OK" in out, out


def test_loafer_asyncapi_describes_it(venv: Path, tmp_path: Path) -> None:
    """The example implements ``Describable``: ``loafer asyncapi`` writes its channel
    (address, kind, summary) and its ``x-loafer-sqlite`` field, as for a bundled plugin."""
    config = tmp_path / "loafer.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [[routes]]
            name = "jobs"
            provider = "sqlite-example"
            queue = "jobs"
            handler = "loafer_sqlite_example.demo:show"

            [routes.provider_options]
            path = "{tmp_path / "queues.db"}"
            """
        )
    )
    out = _ok(_run(venv / "bin" / "loafer", "asyncapi", "--config", config, cwd=tmp_path))
    document = json.loads(out)
    channel = document["channels"]["jobs"]
    assert channel["address"] == "jobs"
    assert channel["x-loafer-provider"] == "sqlite-example"
    assert channel["description"] == "SQLite queue 'jobs' in queues.db"
    assert "servers" not in channel and "servers" not in document
    operation = document["operations"]["receive_jobs"]
    assert operation["x-loafer-sqlite"] == {"database": "queues.db"}
