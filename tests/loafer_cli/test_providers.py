"""``loafer providers``: every installed provider plugin, its version, whether it loads."""

from __future__ import annotations

import textwrap
from pathlib import Path

import loafer_core
from tests.loafer_cli.runner import loafer


def _row(out: str, name: str) -> str:
    rows = [line for line in out.splitlines() if line.startswith(f"│ {name} ")]
    assert len(rows) == 1, out
    return rows[0]


def test_providers_lists_the_four_bundled_plugins_with_versions_and_capabilities() -> None:
    done = loafer("providers")
    assert done.returncode == 0, done.stderr
    for name in ("memory", "rabbit", "amqp", "sqs", "nats", "redis"):
        row = _row(done.stdout, name)
        assert "loafer-core" in row
        assert loafer_core.__version__ in row
        assert "│ yes " in row
    assert "attempt_count (emulated)" in _row(done.stdout, "rabbit")
    assert "lease_extension (native)" in _row(done.stdout, "sqs")
    assert "max_retry_delay=900s" in _row(done.stdout, "amqp")


def test_a_plugin_that_does_not_load_says_why(tmp_path: Path) -> None:
    info = tmp_path / "fake_plugin-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text(
        "[loafer.providers]\nbroken = fake_broken:BrokenProvider\n"
    )
    (tmp_path / "fake_broken.py").write_text(
        textwrap.dedent(
            """
            import library_that_is_not_installed

            class BrokenProvider:
                pass
            """
        )
    )
    done = loafer("providers", env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    row = _row(done.stdout, "broken")
    assert "fake-plugin" in row and "1.2" in row
    assert "no: provider 'broken'" in row
    assert "'library_that_is_not_installed' is missing" in done.stdout
    assert "│ -" in row  # capabilities unknown


def test_providers_says_what_native_and_emulated_mean() -> None:
    done = loafer("providers")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "native: the broker does it itself; emulated: the plugin builds it" in text
