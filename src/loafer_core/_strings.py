"""Refusing a string where an object belongs (``translator="loafer_core:TextTranslator"``).

A ``"module:name"`` path is the configuration file's syntax; in Python the object itself is
passed. A ``str`` even passes some duck-typing checks (it has a ``translate`` method), so
it is refused by name, at construction, with what to pass instead.
"""

from __future__ import annotations

from loafer_core.errors import ConfigurationError

__all__ = ["refuse_string"]


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
