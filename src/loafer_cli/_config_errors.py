"""Messages of config errors: ``FILE: routes[1] ('orders'): max_concurrency: expected an
integer >= 1, got 'ten'``.

Pydantic's errors are turned into these: the location names the file, the route (index,
and name when it has one) and the key; the text says what was expected (each field's
``expect``) and what was found. A value that came from an environment variable is never
shown (it may be a secret): the message names the variable instead.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from loafer_cli._config_env import Key
from loafer_cli._config_schema import LoaferConfig

__all__ = ["Place", "describe_value", "messages_of"]

_MAX_SHOWN = 60


class Place:
    """Where in one file: formats keys as the user wrote them."""

    def __init__(
        self,
        source: str,
        root: str,
        data: Any,
        substituted: Mapping[Key, str],
    ) -> None:
        self.source = source
        self.root = root  # "" for loafer.toml, "tool.loafer." for pyproject.toml
        self.data = data
        self.substituted = substituted
        self.labels: dict[int, str] = {}
        routes = data.get("routes") if isinstance(data, dict) else None
        if isinstance(routes, list):
            for i, route in enumerate(routes):
                if isinstance(route, dict) and isinstance(route.get("name"), str):
                    self.labels[i] = route["name"]

    def route(self, index: int) -> str:
        """``routes[1] ('orders')``."""
        label = self.labels.get(index)
        named = f" ({label!r})" if label else ""
        return f"{self.root}routes[{index}]{named}"

    def where(self, key: Key) -> str:
        """``routes[1] ('orders'): provider_options.url`` for ``('routes', 1, ...)``."""
        if len(key) >= 2 and key[0] == "routes" and isinstance(key[1], int):
            rest = _dotted(key[2:])
            return self.route(key[1]) + (f": {rest}" if rest else "")
        return _dotted(key, self.root)

    def message(self, key: Key, text: str) -> str:
        """The full message: ``FILE: <where>: text``."""
        where = self.where(key)
        return f"{self.source}: {where}: {text}" if where else f"{self.source}: {text}"

    def shown(self, key: Key, value: Any = None, *, lookup: bool = True) -> str:
        """The value at ``key`` for a message, or where it came from if substituted."""
        if key in self.substituted:
            return f"the value of {self.substituted[key]} (not shown)"
        if lookup:
            value = _get(self.data, key)
        return describe_value(value)


def describe_value(value: Any) -> str:
    """A short repr: tables and arrays by kind only (they may hold secrets)."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "true" if value else "false"  # as TOML writes them
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def messages_of(error: ValidationError, place: Place) -> list[str]:
    """One message per problem pydantic found (duplicates from unions merged)."""
    out: list[str] = []
    for item in error.errors():
        loc = tuple(item["loc"])
        if item["type"] == "extra_forbidden":
            key, model, _ = _walk(loc[:-1])
            unknown = str(loc[-1])
            text = _unknown_key(unknown, model)
            key = (*key, unknown)
        else:
            key, _, field = _walk(loc)
            expect = _expect(field)
            if item["type"] == "missing":
                text = f"required key missing (expected {expect})"
            else:
                text = f"expected {expect}, got {place.shown(key)}"
        message = place.message(key, text)
        if message not in out:
            out.append(message)
    return out


def _unknown_key(unknown: str, model: type[BaseModel] | None) -> str:
    allowed = sorted(model.model_fields) if model is not None else []
    text = "unknown key"
    close = difflib.get_close_matches(unknown, allowed, n=1)
    if close:
        text += f" (did you mean {close[0]!r}?)"
    if allowed:
        text += f"; allowed: {', '.join(allowed)}"
    return text


def _walk(loc: Iterable[str | int]) -> tuple[Key, type[BaseModel] | None, FieldInfo | None]:
    """Follow pydantic's ``loc`` through the schema: the key as written (union member
    tags dropped), the model holding the last key, and the last key's field."""
    model: type[BaseModel] | None = LoaferConfig
    holder: type[BaseModel] | None = LoaferConfig
    field: FieldInfo | None = None
    in_mapping = False
    key: list[str | int] = []
    for part in loc:
        if isinstance(part, int):
            key.append(part)
            continue
        if in_mapping:
            # a key of a table of the user's (provider_options, [publishers]): never a
            # field's name, even when spelled like one (a publisher named 'url')
            key.append(part)
            in_mapping = False
        elif model is not None and part in model.model_fields:
            holder = model
            field = model.model_fields[part]
            model = _model_in(field.annotation)
            in_mapping = _is_mapping(field.annotation)
            key.append(part)
        # else: a union member's tag ('str', 'literal[False]'): not part of the key
    return tuple(key), (model if model is not None else holder), field


def _expect(field: FieldInfo | None) -> str:
    extra = field.json_schema_extra if field is not None else None
    if isinstance(extra, dict) and isinstance(extra.get("expect"), str):
        return str(extra["expect"])
    return "a valid value"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _is_mapping(annotation: Any) -> bool:
    return annotation is dict or typing.get_origin(annotation) is dict


def _dotted(key: Iterable[str | int], root: str = "") -> str:
    text = ""
    for part in key:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else f"{root}{part}"
    return text


def _get(data: Any, key: Key) -> Any:
    for part in key:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data
