"""``import loafer_core`` never imports aiokafka; importing the plugin connects to
nothing; the entry points resolve."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_kafka_library() -> None:
    code = (
        "import sys, loafer_core, loafer_core.plugins; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('aiokafka', 'kafka', 'loafer_kafka')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "[]", out


def test_building_a_provider_and_publisher_connects_to_nothing() -> None:
    code = (
        "from loafer_kafka import KafkaProvider, KafkaPublisher; "
        "p = KafkaProvider('orders', url='kafka://u:pw-secret@10.255.255.1:9092'); "
        "q = KafkaPublisher('orders'); "
        "print(p.description().address, q.description().server.host, repr(p.settings))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "10.255.255.1:9092" in out and "127.0.0.1:9092" in out
    assert "pw-secret" not in out


def test_plugin_lists_as_loading() -> None:
    from loafer_core.plugins import available_providers

    [info] = [p for p in available_providers() if p.name == "kafka"]
    assert info.loads, info
