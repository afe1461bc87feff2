"""The code standards, checked with the suite: ruff clean and formatted, mypy --strict on src/."""

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
    "loafer_core.provider",
    "loafer_rabbit",
    "loafer_amqp",
    "loafer_sqs",
    "loafer_nats",
    "loafer_redis",
    "loafer_cli.config",
    "loafer_cli.workers",
]


def _inventory(path: Path) -> set[str]:
    """The object names of a Sphinx-format ``objects.inv`` (what mkdocstrings writes)."""
    header, _, body = path.read_bytes().partition(b"zlib.\n")
    assert b"Project" in header
    return {line.split()[0] for line in zlib.decompress(body).decode().splitlines() if line}
