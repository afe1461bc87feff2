"""``loafer run --log-format json``: a line about a message carries its route, message id,
attempt and outcome as fields."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.loafer_cli.runner import Service

APP = textwrap.dedent(
    """
    from loafer_core import Route
    from loafer_core.memory import MemoryBroker, MemoryProvider

    broker = MemoryBroker()
    broker.publish("q", "bad", message_id="m-42")


    async def handler(content, metadata):
        raise ValueError("cannot handle " + content)


    routes = [Route(MemoryProvider(broker, "q"), handler, name="orders")]
    """
)


def test_a_message_error_is_a_json_line_with_the_messages_fields(tmp_path: Path) -> None:
    (tmp_path / "failing.py").write_text(APP)
    service = Service(["failing:routes", "--log-format", "json"], cwd=tmp_path, env={})
    try:
        service.wait_for("cannot handle bad")
        assert service.stop() == 0
    finally:
        service.kill()
    records = [json.loads(line) for line in service.lines if line.startswith("{")]
    [error] = [r for r in records if r.get("message_id") == "m-42"]
    assert error["level"] == "ERROR"
    assert (error["route"], error["attempt"], error["outcome"]) == ("orders", 1, "RETRY")
    assert "ValueError: cannot handle bad" in error["exc_info"]
