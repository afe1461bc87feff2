"""The code standards, checked with the suite: ruff clean and formatted, mypy --strict on src/,
mypy on tests/ (not strict: pyproject.toml's ``tests.*`` overrides)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["src", "tests", "benchmarks", "examples", "scripts", "noxfile.py"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{module} is not installed: CI installs '.[all,test,lint,docs]'")
        pytest.skip(f"{module} is not installed (pip install 'loafer-core[lint,docs]')")


def test_ruff_check() -> None:
    _need("ruff")
    done = _run("ruff", "check", *PATHS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format() -> None:
    _need("ruff")
    done = _run("ruff", "format", "--check", *PATHS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_on_src() -> None:
    _need("mypy")
    done = _run("mypy", "--strict", "src")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_on_tests() -> None:
    _need("mypy")
    done = _run("mypy", "tests")
    assert done.returncode == 0, done.stdout + done.stderr


def test_docs_check() -> None:
    """Links resolve; every python block of the docs is run or type-checked."""
    _need("mypy")
    done = subprocess.run(
        [sys.executable, "scripts/check_docs.py", "--blocks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_docs_site_builds_strict(tmp_path: Path) -> None:
    """The MkDocs site builds with --strict: no broken link or reference, no page left out."""
    _need("mkdocs")
    _need("mkdocstrings")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    documented = _inventory(tmp_path / "objects.inv")
    missing = [
        f"{module}.{name}"
        for module in PUBLIC_MODULES
        if importlib.util.find_spec(module.partition(".")[0]) is not None
        for name in importlib.import_module(module).__all__
        if not any(entry.endswith(f".{name}") for entry in documented)
    ]
    assert not missing, f"public names missing from the API reference (docs/reference/): {missing}"


#: Every name in these modules' ``__all__`` must have an entry in the API reference.
PUBLIC_MODULES = [
    "loafer_core",
    "loafer_core.memory",
    "loafer_core.testing",
    "loafer_core.metrics",
    "loafer_core.middleware",
    "loafer_core.forward",
    "loafer_core.idempotency",
    "loafer_core.deadletters",
    "loafer_core.batches",
    "loafer_core.ratelimit",
    "loafer_core.breaker",
    "loafer_core.ext.redis_rate",
    "loafer_core.provider",
    "loafer_core.settings",
    "loafer_core.kit",
    "loafer_rabbit",
    "loafer_amqp",
    "loafer_sqs",
    "loafer_nats",
    "loafer_redis",
    "loafer_postgres",
    "loafer_postgres.schema",
    "loafer_postgres.settings",
    "loafer_pubsub",
    "loafer_kafka",
    "loafer_kafka.settings",
    "loafer_cli.config",
    "loafer_cli.workers",
    "loafer_cli.dlq",
    "loafer_postgres.outbox",
    "loafer_postgres.relay",
    "loafer_postgres.inbox",
]


def _inventory(path: Path) -> set[str]:
    """The object names of a Sphinx-format ``objects.inv`` (what mkdocstrings writes)."""
    header, _, body = path.read_bytes().partition(b"zlib.\n")
    assert b"Project" in header
    return {line.split()[0] for line in zlib.decompress(body).decode().splitlines() if line}


#: what a package or an archive is called: never tracked (downloads and build outputs)
ARCHIVES = (".whl", ".tar.gz", ".tgz", ".zip", ".egg", ".tar", ".tar.bz2", ".tar.xz", ".gem")
#: the largest file the repository tracks; the lock file is the one allowed above it
MAX_TRACKED_BYTES = 1_000_000
LARGE_ALLOWED = {"uv.lock"}


def test_no_package_archive_or_large_file_is_tracked() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    tracked = [name for name in listed.split("\0") if name]
    assert "uv.lock" in tracked, "the lock file (uv.lock) must be committed"
    archives = [name for name in tracked if name.lower().endswith(ARCHIVES)]
    assert not archives, f"package archives are tracked (git rm them): {archives}"
    large = [
        f"{name} ({size:,} bytes)"
        for name in tracked
        if name not in LARGE_ALLOWED
        and (ROOT / name).is_file()
        and (size := (ROOT / name).stat().st_size) > MAX_TRACKED_BYTES
    ]
    assert not large, f"files over {MAX_TRACKED_BYTES:,} bytes are tracked: {large}"


def test_the_pip_constraints_are_the_lock() -> None:
    """requirements/constraints.txt (the scripts' pip fallback) pins what uv.lock pins:
    after `uv lock`, re-export it (docs/dependencies.md)."""
    import tomllib

    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {
        (package["name"], package["version"])
        for package in lock["package"]
        if package.get("source", {}).get("editable") != "."
    }
    constraints = {
        tuple(line.split(";")[0].strip().split("=="))
        for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    }
    assert constraints == locked, (
        "requirements/constraints.txt differs from uv.lock: run `uv export --frozen "
        "--all-extras --no-emit-project --no-hashes -o requirements/constraints.txt`\n"
        f"only in the lock: {sorted(locked - constraints)}\n"
        f"only in the constraints: {sorted(constraints - locked)}"
    )
