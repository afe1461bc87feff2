"""The config file's schema (pydantic models): what ``loafer.toml`` may hold.

Every field carries ``expect``, the words an error uses for what it wanted ("an integer
>= 1"); :mod:`loafer_cli._config_errors` turns pydantic's errors into those messages.
Numbers are accepted as TOML numbers or as strings holding one (a ``${VAR}`` substitution
gives a string); booleans are never taken for numbers.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "IMPORT_PATH",
    "IdempotencyConfig",
    "LoaferConfig",
    "ManagerConfig",
    "PublisherConfig",
    "RetryConfig",
    "RouteConfig",
]

#: ``package.module:attribute`` (the attribute may be dotted: ``module:Class.attr``).
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "a boolean is not a number")
    return value


def _import_path(value: Any) -> Any:
    if isinstance(value, str) and not IMPORT_PATH.match(value):
        raise PydanticCustomError("import_path", "not an import path")
    return value


def _one_or_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _store(value: Any) -> Any:
    if isinstance(value, str) and value != "memory" and not _STORE_URL.match(value):
        raise PydanticCustomError("store", "not a store")
    return value


_STORE_URL = re.compile(r"^(redis|rediss|unix)://")


def _expect(words: str) -> dict[str, Any]:
    return {"expect": words}


Count = Annotated[int, BeforeValidator(_not_bool)]
Seconds = Annotated[float, BeforeValidator(_not_bool)]
ImportPath = Annotated[str, BeforeValidator(_import_path)]
Name = Annotated[str, Field(min_length=1)]
Names = Annotated[list[Name], BeforeValidator(_one_or_list)]
Store = Annotated[str, BeforeValidator(_store)]

_MODEL = ConfigDict(extra="forbid", frozen=False, hide_input_in_errors=True)


class RetryConfig(BaseModel):
    """``retry = {initial = 1, factor = 2, maximum = 60}``: the delay of a plain RETRY
    (:class:`~loafer_core.policy.RetryPolicy`); ``retry = false`` for no delay."""

    model_config = _MODEL

    initial: Seconds = Field(1.0, ge=0, json_schema_extra=_expect("seconds >= 0"))
    factor: Seconds = Field(2.0, ge=1, json_schema_extra=_expect("a number >= 1"))
    maximum: Seconds = Field(300.0, ge=0, json_schema_extra=_expect("seconds >= 0"))
    _disabled: bool = PrivateAttr(False)

    @model_validator(mode="wrap")
    @classmethod
    def _accept_false(cls, data: Any, handler: Any) -> Any:
        if data is False:
            off = cls.model_validate({})
            off._disabled = True
            return off
        return handler(data)

    @property
    def disabled(self) -> bool:
        """True for ``retry = false`` (plain RETRYs get no delay)."""
        return self._disabled


class IdempotencyConfig(BaseModel):
    """``[routes.idempotency]``: the route's :class:`~loafer_core.idempotency.Idempotency`
    middleware (skip messages whose key was already handled)."""

    model_config = _MODEL

    key: str = Field(
        "idempotency-key",
        min_length=1,
        json_schema_extra=_expect("a header name, or 'body' (a hash of the body)"),
    )
    ttl: Seconds = Field(24 * 3600.0, gt=0, json_schema_extra=_expect("seconds > 0"))
    lock_ttl: Seconds = Field(60.0, gt=0, json_schema_extra=_expect("seconds > 0"))
    store: Store = Field(
        "memory",
        json_schema_extra=_expect("'memory' or a Redis URL ('redis://host:6379/0')"),
    )
    namespace: str | None = Field(
        None, min_length=1, json_schema_extra=_expect("a non-empty string")
    )


class PublisherConfig(BaseModel):
    """One ``[publishers.NAME]`` table: a publisher routes may forward to (``publish_to``)."""

    model_config = _MODEL

    publisher: str = Field(
        min_length=1,
        json_schema_extra=_expect(
            "a publisher's entry-point name (a string, e.g. 'rabbit', 'amqp', 'sqs', 'sns', 'nats')"
        ),
    )
    target: str = Field(
        min_length=1,
        json_schema_extra=_expect(
            "a non-empty string (the routing key, address, queue, topic or subject)"
        ),
    )
    url: str | None = Field(
        None, min_length=1, json_schema_extra=_expect("a non-empty string (the broker's URL)")
    )
    options: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra=_expect("a table of the publisher's options")
    )


class RouteConfig(BaseModel):
    """One ``[[routes]]`` table."""

    model_config = _MODEL

    name: str | None = Field(None, min_length=1, json_schema_extra=_expect("a non-empty string"))
    provider: str = Field(
        min_length=1,
        json_schema_extra=_expect(
            "a provider's entry-point name (a string, e.g. 'memory', 'rabbit', 'amqp', 'sqs')"
        ),
    )
    queue: str | None = Field(
        None, min_length=1, json_schema_extra=_expect("a non-empty string (the queue or address)")
    )
    provider_options: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra=_expect("a table of the provider's options")
    )
    handler: ImportPath = Field(json_schema_extra=_expect("an import path 'module:attribute'"))
    translator: ImportPath | Literal[False] | None = Field(
        None, json_schema_extra=_expect("an import path 'module:attribute' or false")
    )
    error_handler: ImportPath | None = Field(
        None, json_schema_extra=_expect("an import path 'module:attribute'")
    )
    max_concurrency: Count = Field(10, ge=1, json_schema_extra=_expect("an integer >= 1"))
    handler_timeout: Seconds | None = Field(None, gt=0, json_schema_extra=_expect("seconds > 0"))
    max_attempts: Count | None = Field(None, ge=1, json_schema_extra=_expect("an integer >= 1"))
    retry: RetryConfig | None = Field(
        None, json_schema_extra=_expect("a table {initial, factor, maximum} or false")
    )
    publish: list[Any] | None = Field(
        None, json_schema_extra=_expect("an array of message bodies (memory routes only)")
    )
    publish_to: Names | None = Field(
        None,
        min_length=1,
        json_schema_extra=_expect(
            "a publisher's name or an array of names (of [publishers.NAME] tables)"
        ),
    )
    middleware: list[ImportPath] = Field(
        default_factory=list,
        json_schema_extra=_expect("an array of import paths 'module:attribute'"),
    )
    idempotency: IdempotencyConfig | None = Field(
        None, json_schema_extra=_expect("a table {key, ttl, lock_ttl, store, namespace}")
    )


class ManagerConfig(BaseModel):
    """The ``[manager]`` table."""

    model_config = _MODEL

    shutdown_timeout: Seconds = Field(30.0, ge=0, json_schema_extra=_expect("seconds >= 0"))
    middleware: list[ImportPath] = Field(
        default_factory=list,
        json_schema_extra=_expect("an array of import paths 'module:attribute'"),
    )
    tracing: bool = Field(False, json_schema_extra=_expect("true or false"))


def _default_manager() -> Any:
    return ManagerConfig.model_validate({})


class LoaferConfig(BaseModel):
    """A validated config file: the manager's settings and the routes.

    After :func:`loafer_cli.config.build_routes`, :attr:`memory_broker` is the
    :class:`~loafer_core.memory.MemoryBroker` its memory routes share (``None`` without
    memory routes), and :attr:`stores` the Redis idempotency stores of its routes.
    """

    model_config = _MODEL

    manager: ManagerConfig = Field(
        default_factory=_default_manager, json_schema_extra=_expect("a table ([manager])")
    )
    routes: list[RouteConfig] = Field(
        min_length=1, json_schema_extra=_expect("an array of tables ([[routes]]), at least one")
    )
    publishers: dict[str, PublisherConfig] = Field(
        default_factory=dict,
        json_schema_extra=_expect("tables [publishers.NAME], one per publisher"),
    )
    _source: str = PrivateAttr("loafer.toml")
    _root: str = PrivateAttr("")
    _substituted: dict[tuple[str | int, ...], str] = PrivateAttr(default_factory=dict)
    _memory_broker: Any = PrivateAttr(None)
    _stores: list[Any] = PrivateAttr(default_factory=list)

    @property
    def source(self) -> str:
        """The file this config was read from (as given to ``load_config``)."""
        return self._source

    @property
    def memory_broker(self) -> Any:
        """The memory routes' shared broker, once built (``None`` before or without any)."""
        return self._memory_broker

    @property
    def stores(self) -> list[Any]:
        """The Redis idempotency stores of the routes, once built (one per URL)."""
        return list(self._stores)
