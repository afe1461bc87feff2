from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loafer_core import ConfigurationError
from loafer_core import plugins as plugins_module
from loafer_core.memory import MemoryProvider
from loafer_core.plugins import available_providers, load_provider


def test_load_memory_provider() -> None:
    assert load_provider("memory") is MemoryProvider


@pytest.mark.parametrize(
    ("name", "library", "extra"),
    [
        ("sqs", "aiobotocore", "sqs"),
        ("amqp", "proton", "amqp"),
        ("rabbit", "aio_pika", "rabbit"),
        ("nats", "nats", "nats"),
        ("redis", "redis", "redis"),
    ],
)
def test_our_plugins_without_their_library_name_the_extra(
    name: str, library: str, extra: str
) -> None:
    # a fresh interpreter in which the plugin's library cannot be imported
    code = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, fullname, path=None, target=None):
                if fullname.split(".")[0] == {library!r}:
                    raise ModuleNotFoundError(f"No module named {{fullname!r}}", name=fullname)
                return None
        sys.meta_path.insert(0, Block())
        from loafer_core import ConfigurationError
        from loafer_core.plugins import available_providers, load_provider
        try:
            load_provider({name!r})
        except ConfigurationError as exc:
            print("refused:", exc)
        else:
            print("loaded")
        info = {{i.name: i for i in available_providers()}}[{name!r}]
        print("loads:", info.loads)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert f"pip install 'loafer-core[{extra}]'" in out, out
    assert "loads: False" in out, out


def test_the_sentry_handler_without_sentry_sdk_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, fullname, path=None, target=None):
                if fullname.split(".")[0] == "sentry_sdk":
                    raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
                return None
        sys.meta_path.insert(0, Block())
        from loafer_core import ConfigurationError
        from loafer_core.ext.sentry import sentry_handler
        try:
            sentry_handler()
        except ConfigurationError as exc:
            print("refused:", exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "refused: sentry_handler needs sentry-sdk: pip install 'loafer-core[sentry]'" in out


def test_unknown_name_lists_installed() -> None:
    with pytest.raises(ConfigurationError, match=r"no provider named 'zmq'.*installed: .*memory"):
        load_provider("zmq")


def test_missing_dependency_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fake_sqs_plugin.py").write_text("import aiobotocore_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = md.EntryPoint("sqs", "fake_sqs_plugin:Provider", "loafer.providers")
    monkeypatch.setattr(plugins_module, "_entry_points", lambda: [ep])

    class FakeDriver:
        def __init__(self, group: str, name: str, **kwargs: object) -> None:
            kwargs["on_load_failure_callback"](
                None,
                ep,
                ImportError(  # type: ignore[operator]
                    "No module named 'aiobotocore_missing_dependency'",
                    name="aiobotocore_missing_dependency",
                ),
            )
            raise RuntimeError("no driver loaded")

    import stevedore

    monkeypatch.setattr(stevedore, "DriverManager", FakeDriver)
    with pytest.raises(ConfigurationError, match=r"pip install 'loafer-core\[sqs\]'"):
        load_provider("sqs")
    [info] = available_providers()
    assert info.name == "sqs" and not info.loads
    assert info.error is not None and "aiobotocore_missing_dependency" in info.error


def test_available_providers_reports_every_installed_one() -> None:
    infos = {p.name: p for p in available_providers()}
    assert {"memory", "sqs", "amqp", "rabbit"} <= set(infos)
    memory = infos["memory"]
    assert memory.loads and memory.error is None
    assert memory.distribution == "loafer-core" and memory.version
    for info in infos.values():
        assert info.loads or info.error


def test_import_and_memory_route_import_no_broker_library() -> None:
    code = textwrap.dedent(
        """
        import sys
        import loafer_core
        from loafer_core import Manager, Route
        from loafer_core.memory import MemoryBroker, MemoryProvider
        from loafer_core.plugins import load_provider
        broker = MemoryBroker()
        broker.publish("q", b"x")
        Manager([Route(load_provider("memory")(broker, "q"), lambda c, m: True)]).run(
            forever=False
        )
        assert broker.is_idle("q")
        banned = ("aiobotocore", "botocore", "proton", "aio_pika", "aiormq", "nats",
                  "redis", "opentelemetry", "yaml", "jsonschema",
                  "loafer_sqs", "loafer_amqp", "loafer_rabbit", "loafer_nats", "loafer_redis",
                  "typer", "rich", "click", "pydantic", "loafer_cli", "sentry_sdk",
                  "prometheus_client")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in banned)
        print("LOADED", loaded)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "LOADED []" in out


def test_two_distributions_registering_one_name_is_an_error_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stevedore.extension import ExtensionManager

    from loafer_core.plugins import available_providers

    for dist, module in (("first-plugin", "first_mod"), ("second-plugin", "second_mod")):
        info = tmp_path / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[loafer.providers]\nqueue = {module}:Provider\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(ExtensionManager, "ENTRY_POINT_CACHE", {})
    with pytest.raises(ConfigurationError) as caught:
        load_provider("queue")
    message = str(caught.value)
    assert "registered by more than one distribution" in message
    assert "first-plugin (first_mod:Provider)" in message
    assert "second-plugin (second_mod:Provider)" in message
    [info] = [p for p in available_providers() if p.name == "queue"]
    assert not info.loads and "more than one distribution" in (info.error or "")
