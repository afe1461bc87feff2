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

__all__ = ["IMPORT_PATH", "LoaferConfig", "ManagerConfig", "RetryConfig", "RouteConfig"]

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


def _expect(words: str) -> dict[str, Any]:
    return {"expect": words}


Count = Annotated[int, BeforeValidator(_not_bool)]
Seconds = Annotated[float, BeforeValidator(_not_bool)]
ImportPath = Annotated[str, BeforeValidator(_import_path)]

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


class ManagerConfig(BaseModel):
    """The ``[manager]`` table."""

    model_config = _MODEL

    shutdown_timeout: Seconds = Field(30.0, ge=0, json_schema_extra=_expect("seconds >= 0"))


def _default_manager() -> Any:
    return ManagerConfig.model_validate({})


class LoaferConfig(BaseModel):
    """A validated config file: the manager's settings and the routes.

    After :func:`loafer_cli.config.build_routes`, :attr:`memory_broker` is the
    :class:`~loafer_core.memory.MemoryBroker` its memory routes share (``None`` without
    memory routes).
    """

    model_config = _MODEL

    manager: ManagerConfig = Field(
        default_factory=_default_manager, json_schema_extra=_expect("a table ([manager])")
    )
    routes: list[RouteConfig] = Field(
        min_length=1, json_schema_extra=_expect("an array of tables ([[routes]]), at least one")
    )
    _source: str = PrivateAttr("loafer.toml")
    _root: str = PrivateAttr("")
    _substituted: dict[tuple[str | int, ...], str] = PrivateAttr(default_factory=dict)
    _memory_broker: Any = PrivateAttr(None)

    @property
    def source(self) -> str:
        """The file this config was read from (as given to ``load_config``)."""
        return self._source

    @property
    def memory_broker(self) -> Any:
        """The memory routes' shared broker, once built (``None`` before or without any)."""
        return self._memory_broker
