"""loafer_core._checks: constructor argument checks, as a unit."""

from __future__ import annotations

import math
from typing import Any

import pytest

from loafer_core._checks import seconds, whole
from loafer_core.errors import ConfigurationError


@pytest.mark.parametrize("value", [0, -1, True, "3", 1.5])
def test_whole_refuses(value: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"X\(n=...\): expected an int >= 1, got"):
        whole("X", "n", value, 1)


@pytest.mark.parametrize("value", [0, -2, math.inf, math.nan, True, "1"])
def test_seconds_refuses(value: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"X\(t=...\): expected seconds > 0 or None"):
        seconds("X", "t", value, optional=True)


def test_both_accept() -> None:
    assert whole("X", "n", 3, 1) == 3 and whole("X", "n", None, 1, optional=True) is None
    assert seconds("X", "t", 0.5) == 0.5 and seconds("X", "t", None, optional=True) is None
