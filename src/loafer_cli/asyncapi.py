"""``loafer asyncapi``: an AsyncAPI 3.0 document of a service, built without connecting.

:func:`build_document` reads a :class:`~loafer_core.Manager`'s routes and publishers:

- a **channel** and a ``receive`` **operation** per route: the address (queue, AMQP 1.0
  address, stream), the broker's channel bindings (``amqp``, ``amqp1``, ``sqs``; none for
  memory, NATS and Redis: a Redis route's consumer group is in its operation's
  ``x-loafer-redis``), and one **message** per handler: its payload is the JSON Schema of the type
  the handler declares (:func:`loafer_core.typed.type_schema`; ``{}``, any content, for
  an untyped handler). A :class:`~loafer_core.handlers.Handlers` route has one message
  per handler, each with its discriminator value (a header: the message's ``headers``
  schema; a body field: a ``const`` in the payload);
- a channel and a ``send`` operation per publisher: those of ``Manager.services`` that are
  publishers, and any in a ``publishers`` attribute of the manager or of a route;
- a **server** per broker (protocol and host:port; never a user name or password);
- the models' schemas under ``components/schemas``.

**Extension point.** A provider or a publisher describes itself with
:class:`~loafer_core.provider.Describable` (a ``description()`` returning a
:class:`~loafer_core.provider.Description`), as every bundled plugin does: this module
reads nothing else of a plugin (no private module, no private attribute), so a
third-party plugin is described as the bundled ones are. A publisher among
``Manager.services`` is found by it (a ``Describable`` with ``publish``). The older
hook, a method ``asyncapi_channel()`` on a route, provider or publisher returning a
mapping (see :class:`ChannelInfo`), still wins when present. A publisher may say what it
sends with a ``message_type`` attribute (a model, dataclass, TypedDict or Struct).
Nothing here imports a broker library.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any, TypedDict

from loafer_core.errors import ConfigurationError
from loafer_core.handlers import Handlers, field, header
from loafer_core.manager import Manager
from loafer_core.provider import Describable, Description, Publisher
from loafer_core.route import Route
from loafer_core.typed import declared_type, type_schema

__all__ = [
    "ASYNCAPI_VERSION",
    "ChannelInfo",
    "build_document",
    "describe_channel",
    "find_publishers",
    "render",
]

#: The AsyncAPI version of the documents written.
ASYNCAPI_VERSION = "3.0.0"
_ID = re.compile(r"[^A-Za-z0-9_.-]+")
_SIMPLE_NAME = re.compile(r"[\w.:/-]{1,80}")
_USERINFO = re.compile(r"//[^/@\s]*@")


class ChannelInfo(TypedDict, total=False):
    """What ``asyncapi_channel()`` returns (every key optional; unknown keys ignored).

    ``address``: the channel's address (queue, routing key, topic; None: unknown).
    ``protocol``, ``protocolVersion``, ``host`` (``host:port``, no credentials),
    ``pathname``, ``variables`` (server variables), ``serverDescription``: the server;
    without ``protocol`` and ``host`` the channel has none (in-process).
    ``bindings``, ``operationBindings``: AsyncAPI bindings by protocol
    (``{"amqp": {...}}``). ``kind``: a short name of the broker (``x-loafer-provider``).
    ``description``: of the channel. ``messageType``: for a publisher, the type it sends.
    """

    address: str | None
    protocol: str
    protocolVersion: str
    host: str
    pathname: str
    variables: dict[str, Any]
    serverDescription: str
    bindings: dict[str, Any]
    operationBindings: dict[str, Any]
    kind: str
    description: str
    messageType: Any


Info = dict[str, Any]
"""A :class:`ChannelInfo` as this module handles it."""


def _info(**items: Any) -> Info:
    return dict(items)


# -- describing routes and publishers ---------------------------------------------------


def _hook(obj: Any) -> Info | None:
    hook = getattr(obj, "asyncapi_channel", None)
    if not callable(hook):
        return None
    info = hook()
    if not isinstance(info, Mapping):
        raise ConfigurationError(
            f"{type(obj).__name__}.asyncapi_channel() returned a {type(info).__name__}, "
            "expected a mapping (address, protocol, host, bindings, ...)"
        )
    return {k: v for k, v in info.items() if k in ChannelInfo.__annotations__}


def _from_description(obj: Describable) -> Info:
    """The :class:`ChannelInfo` of what a :class:`~loafer_core.provider.Describable`
    says of itself."""
    described = obj.description()
    if not isinstance(described, Description):
        raise ConfigurationError(
            f"{type(obj).__name__}.description() returned a {type(described).__name__}, "
            "expected a loafer_core.provider.Description"
        )
    info = _info(kind=described.kind, address=described.destination)
    server = described.server
    if server is not None:
        info.update(protocol=server.protocol, host=server.host)
        for key, value in (
            ("protocolVersion", server.protocol_version),
            ("pathname", server.pathname),
            ("serverDescription", server.description),
            ("variables", dict(server.variables)),
        ):
            if value:
                info[key] = value
    if described.summary:
        info["description"] = described.summary
    if described.bindings:
        info["bindings"] = dict(described.bindings)
    if described.operation_bindings:
        info["operationBindings"] = dict(described.operation_bindings)
    info.update((k, v) for k, v in described.extensions.items() if k.startswith("x-loafer-"))
    return info


def describe_channel(obj: Any) -> Info:
    """What is known of the channel of a route, provider or publisher: its
    ``asyncapi_channel()`` (a route's, then its provider's), else the bundled plugins'
    description, else the address found in a ``queue``, ``address`` or ``topic``
    attribute (no server, no bindings)."""
    candidates = [obj, obj.provider] if isinstance(obj, Route) else [obj]
    for candidate in candidates:
        info = _hook(candidate)
        if info is not None:
            return info
    for candidate in candidates:
        if isinstance(candidate, Describable):
            return _from_description(candidate)
    return _generic(candidates[-1])


def _generic(target: Any) -> Info:
    """The channel of an object nothing describes: its ``queue``, ``address`` or
    ``topic`` attribute as the address; no server, no bindings."""
    address = next(
        (
            value
            for value in (getattr(target, a, None) for a in ("queue", "address", "topic"))
            if isinstance(value, str) and value
        ),
        None,
    )
    return _info(kind=type(target).__name__, address=address)


def _is_publisher(obj: Any) -> bool:
    if callable(getattr(obj, "asyncapi_channel", None)):
        return True
    return isinstance(obj, Describable) and isinstance(obj, Publisher)


def _members(value: Any) -> list[tuple[str | None, Any]]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return [(None, v) for v in value]
    return [(None, value)]


def find_publishers(manager: Manager) -> list[tuple[str | None, Any]]:
    """``(name or None, publisher)`` of a manager: each route's ``publish_to`` targets
    (:mod:`loafer_core.forward`), its ``publishers`` attribute and each route's (a list,
    or a mapping name -> publisher), then the publishers among ``Manager.services``
    (unwrapped from a ``PublisherService``); each publisher once."""
    found: list[tuple[str | None, Any]] = []
    seen: set[int] = set()
    candidates: list[tuple[str | None, Any]] = []
    for route in manager.routes:
        targets = getattr(route, "publish_to", None)
        candidates += _members(getattr(targets, "publishers", None))
    candidates += _members(getattr(manager, "publishers", None))
    for route in manager.routes:
        candidates += _members(getattr(route, "publishers", None))
    for service in manager.services:
        service = getattr(service, "publisher", service)
        if _is_publisher(service):
            candidates.append((None, service))
    for name, publisher in candidates:
        if id(publisher) not in seen:
            seen.add(id(publisher))
            found.append((name, publisher))
    return found


# -- messages ---------------------------------------------------------------------------

_HEADER_CODE = header("type").__code__
_FIELD_CODE = field("type").__code__


def _discriminator(fn: Any) -> tuple[str, str] | None:
    """``("header", name)`` or ``("field", name)`` for :func:`header`/:func:`field`."""
    code = getattr(fn, "__code__", None)
    if code is not _HEADER_CODE and code is not _FIELD_CODE:
        return None
    name = inspect.getclosurevars(fn).nonlocals.get("name")
    if not isinstance(name, str):
        return None
    return ("header" if code is _HEADER_CODE else "field"), name


def _json_value(value: Any) -> Any:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _qualname(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return str(name) if name else type(obj).__name__


def _function(handler: Any) -> Any:
    """The function whose first parameter types the content (as the route decides)."""
    handle = getattr(handler, "handle", None)
    return handle if callable(handle) and not inspect.isfunction(handler) else handler


def _component_ref(ref: str, names: Mapping[str, str]) -> str:
    if not ref.startswith("#/$defs/"):
        return ref
    local = ref[len("#/$defs/") :]
    return f"#/components/schemas/{names.get(local, _ID.sub('_', local))}"


#: keywords whose value maps names (of properties, definitions) to schemas
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})


def _rewrite(node: Any, names: Mapping[str, str], *, names_level: bool = False) -> Any:
    """A schema with its ``#/$defs/X`` references pointing to ``components/schemas``.

    An OpenAPI-style ``discriminator`` object (pydantic's and msgspec's tagged unions)
    becomes ``x-discriminator``: in AsyncAPI, ``discriminator`` is a property name (a
    string); the ``oneOf`` and the tags' ``const`` validate the same.
    """
    if isinstance(node, list):
        return [_rewrite(v, names) for v in node]
    if not isinstance(node, dict):
        return node
    if names_level:  # {name: schema}
        return {key: _rewrite(value, names) for key, value in node.items()}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            out[key] = _component_ref(value, names)
        elif key == "discriminator" and isinstance(value, dict):
            mapping = value.get("mapping")
            converted = dict(value)
            if isinstance(mapping, dict):
                converted["mapping"] = {
                    k: _component_ref(v, names) if isinstance(v, str) else v
                    for k, v in mapping.items()
                }
            out["x-discriminator"] = converted
        else:
            out[key] = _rewrite(value, names, names_level=key in _SCHEMA_MAPS)
    return out


def _unique(wanted: str, taken: Iterable[str]) -> str:
    used = set(taken)
    base = _ID.sub("_", wanted).strip("_") or "item"
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}_{n}"
    return name


class _Builder:
    def __init__(self, warn: Callable[[str], None]) -> None:
        self.warn = warn
        self.servers: dict[str, dict[str, Any]] = {}
        self.server_ids: dict[tuple[str, str, str], str] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, Any] = {}
        self.schema_keys: dict[str, str] = {}  # component name -> its schema, canonical
        self.by_type: dict[int, str | None] = {}
        self.kept: list[Any] = []  # the types cached by id: kept alive while building

    def describe(self, obj: Any, label: str) -> Info:
        """:func:`describe_channel`; on an error (a describer that does not fit a
        plugin's version, an ``asyncapi_channel()`` that raises), a warning and the
        generic description."""
        try:
            return describe_channel(obj)
        except Exception as exc:
            self.warn(
                f"{label}: its channel cannot be described ({type(exc).__name__}: {exc}); "
                "written without server or bindings"
            )
            target = obj.provider if isinstance(obj, Route) else obj
            return _generic(target)

    # schemas

    def _component(self, wanted: str, schema: Any) -> str:
        canonical = json.dumps(schema, sort_keys=True, default=str)
        base = _ID.sub("_", wanted).strip("_") or "Schema"
        name, n = base, 1
        while name in self.schema_keys and self.schema_keys[name] != canonical:
            n += 1
            name = f"{base}_{n}"
        self.schema_keys[name] = canonical
        return name

    def payload_of(self, kind: Any) -> dict[str, Any] | None:
        """``{"$ref": "#/components/schemas/NAME"}`` for a type validated, None else."""
        if id(kind) not in self.by_type:
            self.kept.append(kind)
            self.by_type[id(kind)] = self._register(kind)
        name = self.by_type[id(kind)]
        return None if name is None else {"$ref": f"#/components/schemas/{name}"}

    def _register(self, kind: Any) -> str | None:
        try:
            schema = type_schema(kind)
        except Exception as exc:
            self.warn(
                f"{_qualname(kind)}: no JSON Schema ({type(exc).__name__}: {exc}); its "
                "messages are described as any object"
            )
            schema = {"type": "object", "title": _qualname(kind)}
        if schema is None:
            return None
        schema = dict(schema)
        defs = dict(schema.pop("$defs", None) or {})
        names = {local: self._component(local, body) for local, body in defs.items()}
        ref = schema.get("$ref")
        if set(schema) == {"$ref"} and isinstance(ref, str) and ref.startswith("#/$defs/"):
            top = names.get(ref[len("#/$defs/") :])
        else:
            top = None
        if top is None:
            top = self._component(getattr(kind, "__name__", "Schema"), schema)
            self.schemas[top] = _rewrite(schema, names)
        for local, body in defs.items():
            self.schemas[names[local]] = _rewrite(body, names)
        return top

    # servers

    def server_ref(self, info: Info) -> dict[str, str] | None:
        protocol, host = info.get("protocol"), info.get("host")
        if not protocol or not host:
            return None
        host = host.rpartition("@")[2]  # never credentials, whoever described it
        pathname = info.get("pathname") or ""
        key = (protocol, host, pathname)
        server_id = self.server_ids.get(key)
        if server_id is None:
            server_id = _unique(f"{protocol}-{host}{pathname}".replace(":", "-"), self.servers)
            server: dict[str, Any] = {"host": host, "protocol": protocol}
            for name, value in (
                ("pathname", pathname or None),
                ("protocolVersion", info.get("protocolVersion")),
                ("description", info.get("serverDescription")),
                ("variables", info.get("variables")),
            ):
                if value:
                    server[name] = value
            self.servers[server_id] = server
            self.server_ids[key] = server_id
        return {"$ref": f"#/servers/{server_id}"}

    # channels and operations

    def channel(self, wanted: str, title: str, info: Info) -> str:
        channel_id = _unique(wanted, self.channels)
        channel: dict[str, Any] = {"address": info.get("address"), "title": title}
        if info.get("description"):
            channel["description"] = info["description"]
        channel["messages"] = {}
        server = self.server_ref(info)
        if server is not None:
            channel["servers"] = [server]
        if info.get("bindings"):
            channel["bindings"] = dict(info["bindings"])
        channel["x-loafer-provider"] = info.get("kind") or "unknown"
        self.channels[channel_id] = channel
        return channel_id

    def message(self, channel_id: str, handler: Any, entry: Any, discriminator: Any) -> None:
        fn = _function(handler)
        kind = declared_type(fn)
        payload = self.payload_of(kind)
        name = getattr(kind, "__name__", None) if payload is not None else None
        message: dict[str, Any] = {
            "name": name or _qualname(fn),
            "summary": f"handled by {_qualname(fn)}",
            "payload": payload if payload is not None else {},
        }
        if entry is not None and entry.when is not None:
            message["description"] = (
                f"taken when {_qualname(entry.when)}(content, metadata) is true"
            )
            message["x-loafer-when"] = _qualname(entry.when)
        elif entry is not None:
            self._discriminate(message, _json_value(entry.key), discriminator)
        messages = self.channels[channel_id]["messages"]
        messages[_unique(message["name"], messages)] = message

    def _discriminate(self, message: dict[str, Any], value: Any, discriminator: Any) -> None:
        found = _discriminator(discriminator)
        if found is None:
            message["x-loafer-discriminator"] = {
                "callable": _qualname(discriminator),
                "value": value,
            }
            return
        where, name = found
        message["x-loafer-discriminator"] = {where: name, "value": value}
        rule = {"type": "object", "properties": {name: {"const": value}}, "required": [name]}
        if where == "header":
            message["headers"] = rule
        elif message["payload"]:
            message["payload"] = {"allOf": [message["payload"], rule]}
        else:
            message["payload"] = rule

    def operation(self, action: str, channel_id: str, title: str, info: Info) -> None:
        operation_id = _unique(f"{action}_{channel_id}", self.operations)
        operation: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "title": title,
            "messages": [
                {"$ref": f"#/channels/{channel_id}/messages/{m}"}
                for m in self.channels[channel_id]["messages"]
            ],
        }
        if info.get("operationBindings"):
            operation["bindings"] = dict(info["operationBindings"])
        for key, value in info.items():  # a bundled describer's extension fields
            if key.startswith("x-loafer-") and value:
                operation[key] = value
        self.operations[operation_id] = operation

    def route(self, route: Route) -> None:
        info = self.describe(route, route.name)
        title = _USERINFO.sub("//", route.name)  # a default name shows the provider's URL
        wanted = route.name
        if not _SIMPLE_NAME.fullmatch(wanted):  # a default name: "<provider> -> <handler>"
            wanted = f"{info.get('kind') or 'route'}_{info.get('address') or route.name}"
        channel_id = self.channel(wanted, title, info)
        handler = route.handler
        if isinstance(handler, Handlers):
            discriminator = handler.discriminator
            if discriminator is not None:
                found = _discriminator(discriminator)
                self.channels[channel_id]["x-loafer-discriminator"] = (
                    {found[0]: found[1]} if found else {"callable": _qualname(discriminator)}
                )
            for entry in handler.entries:
                self.message(channel_id, entry.handler, entry, discriminator)
        else:
            self.message(channel_id, handler, None, None)
        self.operation("receive", channel_id, f"route {title}", info)

    def publisher(self, name: str | None, publisher: Any) -> None:
        info = self.describe(publisher, type(publisher).__name__)
        address = info.get("address")
        label = name or f"{info.get('kind') or type(publisher).__name__} {address or '?'}"
        channel_id = self.channel(f"publisher_{name or address or 'unknown'}", label, info)
        kind = info.get("messageType", getattr(publisher, "message_type", None))
        payload = self.payload_of(kind) if kind is not None else None
        message_name = getattr(kind, "__name__", None) if payload is not None else None
        self.channels[channel_id]["messages"][_unique(message_name or "message", ())] = {
            "name": message_name or "message",
            "payload": payload if payload is not None else {},
        }
        self.operation("send", channel_id, f"publish: {label}", info)


def build_document(
    manager: Manager,
    *,
    title: str,
    version: str = "1.0.0",
    description: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``manager``'s routes and publishers (see the module
    docstring); ``warn`` is told of a type whose schema cannot be made. Connects to
    nothing."""
    builder = _Builder(warn or (lambda message: None))
    for route in manager.routes:
        builder.route(route)
    for name, publisher in find_publishers(manager):
        builder.publisher(name, publisher)
    info: dict[str, Any] = {"title": title, "version": version}
    info["description"] = description or (
        "The channels a loafer-core service receives from (one per route) and sends to "
        "(one per publisher)."
    )
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": info,
        "defaultContentType": "application/json",
    }
    if builder.servers:
        document["servers"] = builder.servers
    document["channels"] = builder.channels
    document["operations"] = builder.operations
    if builder.schemas:
        document["components"] = {"schemas": builder.schemas}
    return document


def render(document: Mapping[str, Any], fmt: str = "json") -> str:
    """The document as JSON (indented) or YAML (needs PyYAML)."""
    if fmt == "yaml":
        try:
            import yaml  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            raise ConfigurationError("--format yaml needs PyYAML: pip install pyyaml") from None
        text: str = yaml.safe_dump(
            json.loads(json.dumps(document, default=str)), sort_keys=False, allow_unicode=True
        )
        return text
    return json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n"
