"""The code standards, checked with the suite: ruff clean and formatted, mypy --strict on src/."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
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
    assert (tmp_path / "reference" / "core" / "index.html").exists()
