"""``import loafer_core`` never imports nats-py; the plugin's entry points resolve."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_nats() -> None:
    code = (
        "import sys, loafer_core, loafer_core.plugins; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('nats', 'loafer_nats')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "[]", out


def test_plugin_lists_as_loading() -> None:
    from loafer_core.plugins import available_providers

    [info] = [p for p in available_providers() if p.name == "nats"]
    assert info.loads, info
