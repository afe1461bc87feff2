"""tests/_serial.py: under pytest-xdist a ``serial`` test runs while no other test does."""

from __future__ import annotations

import itertools
import json
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytest.importorskip("xdist", reason="pytest-xdist is not installed")


def test_a_serial_test_overlaps_no_other_under_xdist(pytester: pytest.Pytester) -> None:
    log = pytester.path / "spans.jsonl"
    plugin = Path(__file__).with_name("_serial.py").read_text()
    pytester.makepyfile(serial_plugin=plugin)
    pytester.makeconftest('pytest_plugins = ["serial_plugin"]')
    pytester.makepyfile(
        test_spans=textwrap.dedent(
            f"""
            import json, time
            import pytest

            def span(name, seconds):
                start = time.monotonic()
                time.sleep(seconds)
                with open({str(log)!r}, "a") as out:
                    out.write(json.dumps([name, start, time.monotonic()]) + "\\n")

            @pytest.mark.parametrize("i", range(8))
            def test_ordinary(i):
                span(f"ordinary-{{i}}", 0.3)

            @pytest.mark.serial
            def test_alone():
                span("serial", 0.5)

            @pytest.mark.parametrize("i", range(8))
            def test_ordinary_after(i):
                span(f"after-{{i}}", 0.3)
            """
        )
    )
    ini = "[pytest]\nmarkers =\n    serial: runs alone\n"
    pytester.makeini(ini)
    result = pytester.runpytest_subprocess("-n", "3", "-q", timeout=120)
    result.assert_outcomes(passed=17)
    spans = [json.loads(line) for line in log.read_text().splitlines()]
    [(_, start, end)] = [s for s in spans if s[0] == "serial"]
    overlapping = [s[0] for s in spans if s[0] != "serial" and s[1] < end and s[2] > start]
    assert not overlapping, f"ran beside the serial test: {overlapping}"
    # and the ordinary tests did run in parallel (else the check above proves nothing)
    ordinary = sorted((s[1], s[2]) for s in spans if s[0] != "serial")
    assert any(b[0] < a[1] for a, b in itertools.pairwise(ordinary))
