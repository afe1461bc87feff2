"""Refusing a string where an object belongs (``translator="loafer_core:TextTranslator"``).

A ``"module:name"`` path is the configuration file's syntax; in Python the object itself is
passed. A ``str`` even passes some duck-typing checks (it has a ``translate`` method), so
it is refused by name, at construction, with what to pass instead.
"""

from __future__ import annotations

from typing import Any

from loafer_core.errors import ConfigurationError

__all__ = ["checked_instance", "refuse_string"]


def refuse_string(where: str, value: object, expected: str, *, call: str = "") -> None:
    """Raise :class:`ConfigurationError` if ``value`` is a ``str`` or ``bytes``.

    ``where`` names the argument (``"Route(translator=...)"``), ``expected`` what belongs
    there; ``call`` (``"()"``, ``"(...)"``) is appended to a named class (a CamelCase name)
    in the hint, as an instance belongs there.
    """
    if not isinstance(value, str | bytes):
        return
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    shown = repr(text if len(text) <= 80 else text[:80] + "...")
    message = f"{where}: got the string {shown}; pass {expected}, not its name"
    module, sep, name = text.strip().replace("/", ".").rpartition(":")
    if not sep and "." in text:
        module, sep, name = text.strip().rpartition(".")
    if sep and module and name.isidentifier():
        a_class = name[0].isupper() and not name.isupper()
        message += (
            f" (the 'module:name' form is the configuration file's syntax; in Python, "
            f"`from {module} import {name}` and pass {name}{call if a_class else ''})"
        )
    raise ConfigurationError(message)


def checked_instance(where: str, value: Any, protocol: type[Any], expected: str) -> Any:
    """``value`` if it is an instance of the runtime-checkable ``protocol``; else a
    :class:`ConfigurationError` at ``where`` saying what was passed (a string naming the
    object, the class itself, another object) and ``expected`` (``"a publisher (an
    object with async publish(body, *, headers=...))"``)."""
    refuse_string(where, value, expected.partition(" (")[0] + " instance", call="(...)")
    if isinstance(value, type):
        raise ConfigurationError(
            f"{where}: got the class {value.__name__}; pass an instance ({value.__name__}(...))"
        )
    if not isinstance(value, protocol):
        raise ConfigurationError(f"{where}: got a {type(value).__name__}, not {expected}")
    return value
