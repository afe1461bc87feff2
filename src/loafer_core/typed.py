"""Typed handlers: content decoded and validated into the type a handler declares.

A handler whose first parameter is annotated with a pydantic model, a dataclass, a
``TypedDict`` or a msgspec ``Struct`` gets its content as an instance of that type::

    class Order(pydantic.BaseModel):
        id: int
        total: float

    async def on_order(order: Order, metadata): ...

Content that is a ``str``/``bytes`` (no JSON translator) is parsed as JSON first. Content
that does not validate raises :class:`~loafer_core.errors.InvalidMessage`: without an
error handler the message is REJECTED with the validation error as the reason, never
retried. Any other annotation (``dict``, ``Any``, none) leaves the content as it is.

None of pydantic and msgspec is a dependency: a type from one of them is validated with
it (it is installed, since the type was defined); dataclasses and ``TypedDict`` are
validated with pydantic when it is installed, else by a plain check (the keys, the
constructor's arguments).

Publishing: :func:`encode` turns an instance of such a type into JSON bytes and the
discriminator header naming its type (:func:`message_type`), which every publisher of
loafer calls, so that ``publisher.publish(OrderCreated(...))`` reaches the handler of
``Handlers(discriminator=header("type"))`` registered with ``on(OrderCreated)``. A
``TypedDict`` instance is a plain ``dict`` at run time: say its type with
:class:`Typed` (``publish(Typed(OrderDict, {...}))``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import logging
import sys
import typing
from collections.abc import Callable
from typing import Any, NamedTuple, is_typeddict

from loafer_core.errors import ConfigurationError, InvalidMessage

__all__ = [
    "TYPE_HEADER",
    "Encoded",
    "Typed",
    "content_converter",
    "content_schema",
    "declared_type",
    "encode",
    "is_typed",
    "message_type",
    "type_converter",
    "type_schema",
]

TYPE_HEADER = "type"
"""The header :func:`encode` names the message's type in, by default."""

Converter = Callable[[Any], Any]

logger = logging.getLogger("loafer_core.typed")


def declared_type(fn: Any) -> Any:
    """The annotation of ``fn``'s first parameter (``None`` without one)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not params or params[0].annotation is inspect.Parameter.empty:
        return None
    annotation = params[0].annotation
    if isinstance(annotation, str):  # `from __future__ import annotations`
        target = getattr(fn, "__func__", fn)
        try:
            hints = typing.get_type_hints(target)
        except Exception:
            hints = {}
        resolved = hints.get(params[0].name)
        if resolved is None and hasattr(fn, "__call__"):  # noqa: B004 - a callable object
            try:
                resolved = typing.get_type_hints(type(fn).__call__).get(params[0].name)
            except Exception:
                resolved = None
        if resolved is None:
            logger.warning(
                "%s: the annotation %r of its first parameter cannot be resolved (a class "
                "defined inside a function, or imported only under TYPE_CHECKING, with "
                "`from __future__ import annotations`?): its content is not validated",
                getattr(fn, "__qualname__", fn),
                annotation,
            )
        annotation = resolved
    return annotation


def content_converter(fn: Any) -> Converter | None:
    """A function turning content into what ``fn``'s first parameter declares, or None
    when it declares nothing we validate."""
    return type_converter(declared_type(fn))


def type_converter(kind: Any) -> Converter | None:
    """A function turning content into ``kind`` (a pydantic model, msgspec Struct,
    dataclass or TypedDict), or None for a type we do not validate into."""
    if not isinstance(kind, type):
        return None
    if _is_pydantic_model(kind):
        return _pydantic_model(kind)
    if _is_msgspec_struct(kind):
        return _msgspec_struct(kind)
    if dataclasses.is_dataclass(kind) or _is_typeddict(kind):
        if "pydantic" in sys.modules or importlib.util.find_spec("pydantic") is not None:
            try:
                return _pydantic_adapter(kind)
            except Exception:  # pydantic refuses it (typing.TypedDict before Python 3.12)
                pass
        return _plain_dataclass(kind) if dataclasses.is_dataclass(kind) else _plain_typeddict(kind)
    return None


def content_schema(fn: Any) -> dict[str, Any] | None:
    """The JSON Schema of the content ``fn`` declares (its first parameter's type, see
    :func:`type_schema`), or None when it declares nothing that is validated.

    For tools describing a service (``loafer asyncapi``); nothing here runs per message.
    """
    return type_schema(declared_type(fn))


def type_schema(kind: Any) -> dict[str, Any] | None:
    """The JSON Schema of ``kind`` as :func:`content_converter` validates it, or None for a
    type it does not validate (``dict``, ``Any``, none).

    A pydantic model: ``model_json_schema()``; a msgspec ``Struct``:
    ``msgspec.json.schema()``; a dataclass or ``TypedDict``: pydantic's ``TypeAdapter``
    when pydantic is installed and takes it, else an object schema of its fields (their
    own schemas where pydantic gives them). Nested definitions are under ``"$defs"``,
    referenced as ``"#/$defs/NAME"`` (the top level may itself be such a reference). A
    type the library cannot describe raises that library's error.
    """
    if not isinstance(kind, type):
        return None
    if _is_pydantic_model(kind):
        schema: dict[str, Any] = kind.model_json_schema(mode="validation")  # type: ignore[attr-defined]
        return schema
    if _is_msgspec_struct(kind):
        import msgspec  # type: ignore[import-not-found, unused-ignore]

        return dict(msgspec.json.schema(kind))
    if not (dataclasses.is_dataclass(kind) or _is_typeddict(kind)):
        return None
    pydantic_installed = "pydantic" in sys.modules or importlib.util.find_spec("pydantic")
    if pydantic_installed:
        import pydantic

        try:
            return dict(pydantic.TypeAdapter(kind).json_schema(mode="validation"))
        except pydantic.PydanticUserError:  # typing.TypedDict before Python 3.12
            pass
    return _fields_schema(kind, use_pydantic=bool(pydantic_installed))


def _fields_schema(kind: Any, *, use_pydantic: bool) -> dict[str, Any]:
    """An object schema of a dataclass's or TypedDict's fields (what the plain checks
    validate: a TypedDict's keys exactly, a dataclass's constructor arguments)."""
    try:
        hints = typing.get_type_hints(kind)
    except Exception:
        hints = dict(getattr(kind, "__annotations__", {}))
    if dataclasses.is_dataclass(kind):
        fields = [f for f in dataclasses.fields(kind) if f.init]
        names = [f.name for f in fields]
        required = [
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
    else:
        names = list(hints)
        required = [n for n in names if n in getattr(kind, "__required_keys__", ())]
    defs: dict[str, Any] = {}
    properties = {name: _field_schema(hints.get(name), defs, use_pydantic) for name in names}
    schema: dict[str, Any] = {"title": kind.__name__, "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if not dataclasses.is_dataclass(kind):
        schema["additionalProperties"] = False  # the plain check refuses unknown keys
    if defs:
        schema["$defs"] = defs
    return schema


def _field_schema(hint: Any, defs: dict[str, Any], use_pydantic: bool) -> dict[str, Any]:
    if hint is None or not use_pydantic:
        return {}
    import pydantic

    try:
        schema = dict(pydantic.TypeAdapter(hint).json_schema(mode="validation"))
    except Exception:  # a type pydantic cannot describe: any value
        return {}
    defs.update(schema.pop("$defs", {}))
    return schema


def _is_typeddict(kind: type) -> bool:
    extensions = sys.modules.get("typing_extensions")
    return is_typeddict(kind) or bool(extensions and extensions.is_typeddict(kind))


def _is_pydantic_model(kind: type) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and issubclass(kind, pydantic.BaseModel)


def _is_msgspec_struct(kind: type) -> bool:
    msgspec = sys.modules.get("msgspec")
    return msgspec is not None and issubclass(kind, msgspec.Struct)


def _invalid(kind: type, detail: str) -> InvalidMessage:
    return InvalidMessage(f"content is not a valid {kind.__name__}: {detail}")


def _pydantic_errors(error: Any) -> str:
    parts = []
    for item in error.errors()[:10]:
        where = ".".join(str(x) for x in item.get("loc", ())) or "(content)"
        parts.append(f"{where}: {item.get('msg')}")
    return "; ".join(parts)


def _pydantic_model(kind: Any) -> Converter:
    return _pydantic(kind, kind.model_validate_json, kind.model_validate)


def _pydantic_adapter(kind: Any) -> Converter:
    import pydantic

    adapter = pydantic.TypeAdapter(kind)
    return _pydantic(kind, adapter.validate_json, adapter.validate_python)


def _pydantic(
    kind: Any, from_json: Callable[[Any], Any], from_python: Callable[[Any], Any]
) -> Converter:
    """A converter: JSON text through ``from_json``, decoded content through
    ``from_python``; pydantic's errors said as an :class:`InvalidMessage`."""
    import pydantic

    def convert(content: Any) -> Any:
        try:
            if isinstance(content, str | bytes | bytearray):
                return from_json(content)
            return from_python(content)
        except pydantic.ValidationError as exc:
            raise _invalid(kind, _pydantic_errors(exc)) from None

    return convert


def _msgspec_struct(kind: Any) -> Converter:
    import msgspec  # type: ignore[import-not-found, unused-ignore]

    def convert(content: Any) -> Any:
        try:
            if isinstance(content, str | bytes | bytearray):
                return msgspec.json.decode(content, type=kind)
            return msgspec.convert(content, type=kind)
        except msgspec.ValidationError as exc:
            raise _invalid(kind, str(exc)) from None
        except msgspec.DecodeError as exc:
            raise _invalid(kind, f"not JSON: {exc}") from None

    return convert


def _mapping(kind: type, content: Any) -> dict[str, Any]:
    if isinstance(content, str | bytes | bytearray):
        try:
            content = json.loads(content)
        except (ValueError, RecursionError) as exc:
            raise _invalid(kind, f"not JSON: {exc}") from None
    if not isinstance(content, dict):
        raise _invalid(kind, f"expected an object, got {type(content).__name__}")
    return content


def _plain_dataclass(kind: Any) -> Converter:
    def convert(content: Any) -> Any:
        try:
            return kind(**_mapping(kind, content))
        except TypeError as exc:
            raise _invalid(kind, str(exc)) from None

    return convert


def _plain_typeddict(kind: Any) -> Converter:
    required = set(getattr(kind, "__required_keys__", ()))
    known = set(typing.get_type_hints(kind))

    def convert(content: Any) -> Any:
        mapping = _mapping(kind, content)
        missing = sorted(required - mapping.keys())
        unknown = sorted(mapping.keys() - known)
        if missing or unknown:
            detail = ", ".join(
                part
                for part in (
                    f"missing {missing}" if missing else "",
                    f"unknown {unknown}" if unknown else "",
                )
                if part
            )
            raise _invalid(kind, detail)
        return mapping

    return convert


# -- publishing typed objects ------------------------------------------------------------------


class Encoded(NamedTuple):
    """A typed object made ready to publish (see :func:`encode`)."""

    body: bytes
    """The object as UTF-8 JSON."""
    content_type: str
    """``application/json``."""
    headers: dict[str, str]
    """``{header: message_type(kind)}`` (empty when no header is set)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Typed:
    """A value published as ``kind``: serialised as ``kind``, its discriminator header
    naming ``kind``. Needed for a ``TypedDict`` (its instances are plain dicts); works
    for any type :func:`encode` takes (a dict published as a pydantic model, say)."""

    kind: type
    value: Any


def message_type(kind: type) -> str:
    """The name a message of ``kind`` carries in its discriminator header: the class's
    ``__message_type__`` when it sets one (``__message_type__ = "order.created"``), else
    its ``__name__`` (``OrderCreated``). ``Handlers.on(OrderCreated)`` matches it."""
    named = getattr(kind, "__message_type__", None)
    if isinstance(named, str) and named:
        return named
    return kind.__name__


def is_typed(body: Any) -> bool:
    """True for what :func:`encode` takes: a pydantic model, a dataclass or msgspec
    ``Struct`` instance, or a :class:`Typed`."""
    if isinstance(body, str | bytes | bytearray | memoryview | dict | list | int | float):
        return False  # the usual bodies: no further look
    if isinstance(body, Typed):
        return True
    kind = type(body)
    return (
        (dataclasses.is_dataclass(kind) and not isinstance(body, type))
        or _is_pydantic_model(kind)
        or _is_msgspec_struct(kind)
    )


def encode(body: Any, *, header: str | None = TYPE_HEADER) -> Encoded | None:
    """A typed object as JSON bytes with the header naming its type; ``None`` for any
    other body (bytes, str, dict...: the publisher encodes those as it always did).

    - a pydantic model: ``model_dump_json(by_alias=True)`` (what ``model_validate_json``
      reads back);
    - a dataclass: pydantic's JSON serialiser when pydantic is installed (dates, UUIDs,
      nested models), else ``json.dumps(dataclasses.asdict(...))``;
    - a msgspec ``Struct``: ``msgspec.json.encode``;
    - :class:`Typed` ``(kind, value)``: ``value`` serialised as ``kind`` (for a
      ``TypedDict``: pydantic's ``TypeAdapter`` when installed, which checks it, else
      ``json.dumps``).

    ``header`` is the header set to :func:`message_type` (``None``: none). A value that
    cannot be serialised raises :class:`~loafer_core.errors.ConfigurationError`.
    """
    if not is_typed(body):
        return None
    if isinstance(body, Typed):
        kind, value = body.kind, body.value
        if not isinstance(kind, type):
            raise ConfigurationError(f"Typed(kind, value): kind must be a class, got {kind!r}")
    else:
        kind, value = type(body), body
    try:
        data = _serialise(kind, value)
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(
            f"cannot publish {type(value).__name__} as {kind.__name__}: it does not "
            f"serialise to JSON ({type(exc).__name__}: {exc})"
        ) from exc
    headers = {header: message_type(kind)} if header else {}
    return Encoded(data, "application/json", headers)


def _serialise(kind: type, value: Any) -> bytes:
    if _is_pydantic_model(kind):
        if not isinstance(value, kind):
            value = kind.model_validate(value)  # type: ignore[attr-defined]
        return str(value.model_dump_json(by_alias=True)).encode("utf-8")
    if _is_msgspec_struct(kind):
        import msgspec

        if not isinstance(value, kind):
            value = msgspec.convert(value, type=kind)
        return bytes(msgspec.json.encode(value))
    pydantic = sys.modules.get("pydantic")
    if pydantic is None and importlib.util.find_spec("pydantic") is not None:
        import pydantic
    if pydantic is not None:
        if dataclasses.is_dataclass(kind) and isinstance(value, kind):
            import pydantic_core

            return bytes(pydantic_core.to_json(value, by_alias=True))
        try:
            adapter = pydantic.TypeAdapter(kind)
        except Exception:  # pydantic refuses it (typing.TypedDict before Python 3.12)
            adapter = None
        if adapter is not None:
            return bytes(adapter.dump_json(adapter.validate_python(value), by_alias=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value, separators=(",", ":")).encode("utf-8")
