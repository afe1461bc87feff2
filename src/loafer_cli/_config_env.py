"""``${VAR}`` and ``${VAR:-default}`` substitution in the string values of a config file.

- ``${VAR}``: the variable's value; unset is an error (naming the variable, never a value).
- ``${VAR:-default}``: the default when the variable is unset or empty (as in the shell).
- ``$${`` is a literal ``${``. Keys are never substituted.

Which values came from substitution is recorded, so that an error about such a value
says where it came from instead of showing it (it may be a secret).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["Key", "SubstitutionError", "substitute"]

Key = tuple[str | int, ...]

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SubstitutionError(Exception):
    """A reference that cannot be substituted; ``key`` is where in the file."""

    def __init__(self, key: Key, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def substitute(
    data: Any, environ: Mapping[str, str], key: Key = (), found: dict[Key, str] | None = None
) -> tuple[Any, dict[Key, str]]:
    """Return ``data`` with every string value substituted, and ``{key: "${VAR}, ..."}``
    for the values that used a variable."""
    found = {} if found is None else found
    if isinstance(data, str):
        return _one(data, environ, key, found), found
    if isinstance(data, dict):
        return {k: substitute(v, environ, (*key, k), found)[0] for k, v in data.items()}, found
    if isinstance(data, list):
        return [substitute(v, environ, (*key, i), found)[0] for i, v in enumerate(data)], found
    return data, found


def _one(text: str, environ: Mapping[str, str], key: Key, found: dict[Key, str]) -> str:
    if "${" not in text:
        return text
    used: list[str] = []

    def replace(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$${":
            return "${"
        inner = match.group(1)
        if inner is None:
            raise SubstitutionError(key, "unclosed '${' (write '$${' for a literal '${')")
        name, sep, default = inner.partition(":-")
        if not _NAME.match(name):
            raise SubstitutionError(
                key,
                f"'${{{name}}}' is not a variable reference: use ${{NAME}} or "
                "${NAME:-default} with NAME made of letters, digits and _",
            )
        used.append(f"${{{name}}}")
        value = environ.get(name)
        if sep:
            return value if value else default
        if value is None:
            raise SubstitutionError(
                key,
                f"environment variable {name} is not set (set it, or give a default: "
                f"${{{name}:-default}})",
            )
        return value

    result = _REFERENCE.sub(replace, text)
    if used:
        found[key] = ", ".join(used)
    return result
