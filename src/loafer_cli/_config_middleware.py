"""Middleware from a config file: ``middleware = [...]`` import paths, ``tracing = true``
and ``[routes.idempotency]``.

The rule for an import path in ``middleware`` (see docs/config.md):

- a **class** is instantiated with no arguments (as handlers are), and the instance is
  the middleware (``"loafer_core.idempotency:Idempotency"``);
- a callable that can be called with **no arguments** but not with three (a function
  without required parameters, such as ``tracing(*, tracer_provider=None)``) is a
  **factory**: it is called once, when the config is built, and what it returns is the
  middleware (``"loafer_core.ext.otel:tracing"``);
- anything else must be the middleware itself: a callable taking
  ``(delivery, route, call_next)``.

Whatever is used must take those three arguments; anything else is an error naming the
path and saying what a middleware is.
"""

from __future__ import annotations

import inspect
from typing import Any

from loafer_cli._config_imports import ImportProblem, import_object
from loafer_cli._config_schema import IdempotencyConfig
from loafer_core.errors import ConfigurationError

__all__ = ["MiddlewareProblem", "idempotency_of", "middleware_of", "tracing_middleware"]

_WHAT = "a middleware is an async callable (delivery, route, call_next) -> Outcome"


class MiddlewareProblem(Exception):
    """A middleware cannot be had; the message says why and what to fix; ``key`` is the
    key within the middleware's table, if it has one (``("store",)``)."""

    def __init__(self, message: str, key: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


def middleware_of(path: str) -> Any:
    """The middleware ``path`` names (see the module docstring for the rule)."""
    try:
        obj = import_object(path)
    except ImportProblem as exc:
        raise MiddlewareProblem(str(exc)) from None
    if not callable(obj):
        raise MiddlewareProblem(f"{path!r} is a {type(obj).__name__}, not callable; {_WHAT}")
    if _takes(obj, 0) and not _takes(obj, 3):
        try:
            made = obj()
        except ConfigurationError as exc:
            raise MiddlewareProblem(
                f"{path!r} (a factory, called with no arguments): {exc}"
            ) from None
        except Exception as exc:
            raise MiddlewareProblem(
                f"{path!r} (a factory, called with no arguments) failed: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if not callable(made) or not _takes(made, 3):
            raise MiddlewareProblem(
                f"{path!r} takes no arguments, so it is called as a factory, but it returned "
                f"{_described(made)}, not a middleware; {_WHAT}"
            )
        return made
    if not _takes(obj, 3):
        raise MiddlewareProblem(
            f"{path!r} cannot be called with (delivery, route, call_next) nor with no "
            f"arguments; {_WHAT}, or a factory taking no arguments that returns one"
        )
    return obj


def _takes(obj: Any, count: int) -> bool:
    """Whether ``obj`` can be called with ``count`` positional arguments."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return count == 3  # no signature to read (a builtin): taken for a middleware
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def _described(obj: Any) -> str:
    if obj is None:
        return "None"
    return f"a {type(obj).__name__}"


def tracing_middleware() -> Any:
    """The OpenTelemetry tracing middleware (``loafer_core.ext.otel.tracing()``), or
    :class:`MiddlewareProblem` saying which extra to install."""
    from loafer_core.ext.otel import tracing

    try:
        return tracing()
    except (ConfigurationError, ImportError):
        raise MiddlewareProblem(
            "needs OpenTelemetry (opentelemetry-api), which is not installed: "
            "pip install 'loafer-core[otel]' (or set tracing = false)"
        ) from None


def idempotency_of(config: IdempotencyConfig, stores: dict[str, Any]) -> Any:
    """The route's :class:`~loafer_core.idempotency.Idempotency` middleware. A Redis
    store is made once per URL and kept in ``stores`` (the manager closes them)."""
    from loafer_core.idempotency import Idempotency, MemoryStore, body_hash

    if config.store == "memory":
        store: Any = MemoryStore()
    else:
        store = stores.get(config.store)
        if store is None:
            try:
                import redis.asyncio  # noqa: F401 - only to say which extra is missing
            except ImportError:
                raise MiddlewareProblem(
                    "a Redis store needs redis-py, which is not installed: "
                    "pip install 'loafer-core[redis]' (or store = \"memory\")",
                    ("store",),
                ) from None
            from loafer_core.ext.redis_store import RedisStore

            try:
                store = RedisStore(config.store)
            except ConfigurationError as exc:
                raise MiddlewareProblem(str(exc), ("store",)) from None
            stores[config.store] = store
    key: Any = body_hash if config.key == "body" else config.key
    try:
        return Idempotency(
            store, key=key, ttl=config.ttl, lock_ttl=config.lock_ttl, namespace=config.namespace
        )
    except ConfigurationError as exc:  # pragma: no cover - the schema checks the same
        raise MiddlewareProblem(str(exc)) from None
