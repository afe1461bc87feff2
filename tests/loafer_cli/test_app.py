"""The ``loafer`` console script is installed and answers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def test_the_console_script_is_installed_and_shows_its_help() -> None:
    script = shutil.which("loafer", path=str(Path(sys.executable).parent))
    assert script is not None, "pip install -e . installs the loafer command"
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage: loafer" in done.stdout


def test_every_command_is_listed_in_the_help() -> None:
    script = shutil.which("loafer", path=str(Path(sys.executable).parent))
    assert script is not None
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60).stdout
    for command in ("run", "check", "providers", "publish", "asyncapi"):
        assert f"│ {command} " in out, out


def test_extras_named_in_the_help_keep_their_brackets() -> None:
    """Rich markup took ``[prometheus]`` for a style and printed ``loafer-core.``."""
    script = shutil.which("loafer", path=str(Path(sys.executable).parent))
    assert script is not None
    out = subprocess.run(
        [script, "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "240"},
    ).stdout
    assert "loafer-core[prometheus]" in out, out
    assert "loafer-core[otel]" in out, out


def test_json_lines_hold_time_level_logger_message_exc_info_and_extras() -> None:
    import json
    import logging

    from loafer_cli.logs import JSONFormatter

    logger = logging.getLogger("loafer.test")
    try:
        raise RuntimeError("bad")
    except RuntimeError:
        record = logger.makeRecord(
            "loafer.test",
            logging.ERROR,
            __file__,
            1,
            "failed %s",
            ("x",),
            sys.exc_info(),
            extra={"route": "orders", "obj": object()},
        )
    entry = json.loads(JSONFormatter().format(record))
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "loafer.test"
    assert entry["message"] == "failed x"
    assert entry["route"] == "orders"
    assert entry["obj"].startswith("<object object at")
    assert "RuntimeError: bad" in entry["exc_info"]
    assert entry["time"].endswith("+00:00")
    assert set(entry) == {"time", "level", "logger", "message", "exc_info", "route", "obj"}


def test_option_values_are_json_where_they_parse() -> None:
    import pytest

    from loafer_cli.publish import parse_pairs
    from loafer_core import ConfigurationError

    assert parse_pairs(["a=1", "b=true", "c=text", "d=[1, 2]", "e=", "f=x=y"], "--option") == {
        "a": 1,
        "b": True,
        "c": "text",
        "d": [1, 2],
        "e": "",
        "f": "x=y",
    }
    with pytest.raises(ConfigurationError, match="expected key=value"):
        parse_pairs(["novalue"], "--option")


def test_reload_gives_the_child_the_config_files_drain_time(tmp_path: Path) -> None:
    """--reload used (--shutdown-timeout or 30 s) + 10 s, whatever the config file said."""
    from loafer_cli.app import LogFormat, LogLevel, _configured_shutdown_timeout, _RunOptions

    (tmp_path / "reload_app.py").write_text("async def handle(content, metadata):\n    pass\n")
    config = tmp_path / "loafer.toml"
    config.write_text(
        '[manager]\nshutdown_timeout = 45\n\n[[routes]]\nname = "r"\nprovider = "memory"\n'
        'queue = "q"\nhandler = "reload_app:handle"\n'
    )

    def options(config_file: Path | None, target: str | None = None) -> _RunOptions:
        return _RunOptions(
            target, config_file, LogLevel.info, LogFormat.plain, None, None, None, None
        )

    assert _configured_shutdown_timeout(options(config)) == 45.0
    assert _configured_shutdown_timeout(options(None, "app:routes")) is None  # not imported
    config.write_text("[manager]\nshutdown_timeout = 'soon'\n")
    assert _configured_shutdown_timeout(options(config)) is None  # the child will say why
