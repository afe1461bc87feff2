"""Checks of constructor arguments, each saying what to pass instead."""

from __future__ import annotations

import math
from typing import Any

from loafer_core.errors import ConfigurationError


def whole(owner: str, name: str, value: Any, minimum: int, *, optional: bool = False) -> Any:
    """``value`` if it is an int >= ``minimum`` (or None when ``optional``); else a
    ConfigurationError naming ``owner(name=...)``."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        more = " or None" if optional else ""
        raise ConfigurationError(
            f"{owner}({name}=...): expected an int >= {minimum}{more}, got {value!r}"
        )
    return value


def seconds(owner: str, name: str, value: Any, *, optional: bool = False) -> Any:
    """``value`` if it is a finite number of seconds > 0 (or None when ``optional``)."""
    if optional and value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        more = " or None" if optional else ""
        raise ConfigurationError(f"{owner}({name}=...): expected seconds > 0{more}, got {value!r}")
    return value
