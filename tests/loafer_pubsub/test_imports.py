"""``import loafer_core`` never imports the Pub/Sub libraries; importing the plugin does
no I/O (no credentials looked up); the entry points resolve."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_pubsub_library() -> None:
    code = (
        "import sys, loafer_core, loafer_core.plugins; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('gcloud', 'aiohttp', 'loafer_pubsub')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "[]", out


def test_building_a_provider_and_publisher_reads_no_credentials() -> None:
    # a credentials variable naming a missing file: a Token built at construction would fail
    code = (
        "import os; os.environ['GOOGLE_APPLICATION_CREDENTIALS'] = '/nonexistent/key.json'; "
        "from loafer_pubsub import PubSubProvider, PubSubPublisher; "
        "p = PubSubProvider('sub-name', project='p'); q = PubSubPublisher('topic', project='p'); "
        "print(p.description().address, q.description().server)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "https://pubsub.googleapis.com/v1" in out


def test_plugin_lists_as_loading() -> None:
    from loafer_core.plugins import available_providers

    [info] = [p for p in available_providers() if p.name == "pubsub"]
    assert info.loads, info
