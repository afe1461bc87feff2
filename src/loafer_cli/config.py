"""Routes from a config file: ``loafer.toml``, or ``[tool.loafer]`` in ``pyproject.toml``.

- :func:`find_config` finds the file; :func:`load_config` reads it, substitutes
  ``${VAR}`` / ``${VAR:-default}`` in string values and validates it (pydantic);
- :func:`build_routes` builds the ``[publishers]`` (by their entry-point names), loads
  each route's provider plugin by its entry-point name, imports the handler, translator,
  error handler and middleware, and builds the :class:`~loafer_core.Route` objects
  (``publish_to``, ``[routes.idempotency]``); :func:`build_manager` adds the manager
  (its ``middleware``, ``tracing``).

Nothing connects to a broker here. Every problem is a
:class:`~loafer_core.errors.ConfigurationError` whose message names the file, the route
and the key: ``loafer.toml: routes[1] ('orders'): max_concurrency: expected an integer
>= 1, got 'ten'``. See docs/config.md for the format.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loafer_cli._config_env import SubstitutionError, substitute
from loafer_cli._config_errors import Place, messages_of
from loafer_cli._config_imports import ImportProblem, import_object
from loafer_cli._config_middleware import (
    MiddlewareProblem,
    idempotency_of,
    middleware_of,
    tracing_middleware,
)
from loafer_cli._config_provider import OptionProblem, provider_arguments
from loafer_cli._config_publishers import PublisherProblem, publisher_of, targets_of
from loafer_cli._config_schema import LoaferConfig, RetryConfig, RouteConfig
from loafer_core.errors import ConfigurationError
from loafer_core.manager import Manager
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.plugins import load_provider
from loafer_core.policy import RetryPolicy
from loafer_core.route import Route
from loafer_core.settings import SettingError

__all__ = [
    "CONFIG_NAME",
    "LoaferConfig",
    "build_manager",
    "build_routes",
    "find_config",
    "load_config",
]

CONFIG_NAME = "loafer.toml"
"""The config file's own name (looked for before ``pyproject.toml``)."""
_PYPROJECT = "pyproject.toml"


def find_config(start: Path | None = None) -> Path | None:
    """``loafer.toml`` in ``start`` (default: the current directory), else its
    ``pyproject.toml`` if that has a ``[tool.loafer]`` table, else ``None``.

    A ``pyproject.toml`` that is not valid TOML but mentions ``tool.loafer`` is returned
    too, so that :func:`load_config` reports what is wrong with it.
    """
    directory = Path.cwd() if start is None else Path(start)
    candidate = directory / CONFIG_NAME
    if candidate.is_file():
        return candidate
    pyproject = directory / _PYPROJECT
    if pyproject.is_file():
        try:
            text = pyproject.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            # unreadable: if it seems to hold the config, let load_config say what is wrong
            return pyproject if "tool.loafer" in text else None
        tool = data.get("tool")
        if isinstance(tool, dict) and "loafer" in tool:
            return pyproject
    return None


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> LoaferConfig:
    """Read, substitute and validate the config file at ``path``.

    ``environ`` (default ``os.environ``) is where ``${VAR}`` are looked up. Raises
    :class:`ConfigurationError` naming the file, route and key of every problem found.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{source}: cannot read the config file: {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: not valid TOML: {exc}") from None
    root = ""
    data: Any = document
    if path.name == _PYPROJECT:
        root = "tool.loafer."
        tool = document.get("tool")
        data = tool.get("loafer") if isinstance(tool, dict) else None
        if not isinstance(data, dict):
            raise ConfigurationError(
                f"{source}: no [tool.loafer] table (put the routes in [[tool.loafer.routes]])"
            )
    env = os.environ if environ is None else environ
    try:
        data, substituted = substitute(data, env)
    except SubstitutionError as exc:
        message = Place(source, root, data, {}).message(exc.key, exc.message)
        raise ConfigurationError(message) from None
    place = Place(source, root, data, substituted)
    try:
        config = LoaferConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError("\n".join(messages_of(exc, place))) from None
    names: dict[str, int] = {}
    for index, route in enumerate(config.routes):
        if route.name is None:
            continue
        if route.name in names:
            raise ConfigurationError(
                place.message(
                    ("routes", index, "name"),
                    f"{route.name!r} is already the name of routes[{names[route.name]}]",
                )
            )
        names[route.name] = index
    config._source = source
    config._root = root
    config._substituted = substituted
    return config


def build_routes(config: LoaferConfig) -> list[Route]:
    """Build every route of ``config`` (nothing connects yet).

    The config file's directory is put on ``sys.path`` (for the handlers' imports). The
    ``[publishers]`` are built first, one object per table, shared by the routes whose
    ``publish_to`` names it. Memory routes share one new
    :class:`~loafer_core.memory.MemoryBroker`, kept as ``config.memory_broker``; their
    ``publish`` bodies are put on their queues. Redis idempotency stores (one per URL) are
    kept as ``config.stores``. Raises :class:`ConfigurationError` listing every problem
    (one per publisher and per route).
    """
    place = Place(config._source, config._root, None, config._substituted)
    for index, route in enumerate(config.routes):
        if route.name:
            place.labels[index] = route.name
    directory = str(Path(config._source).resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    broker = MemoryBroker()
    config._memory_broker = None
    config._stores = []
    problems: list[str] = []
    publishers: dict[str, Any] = {}
    for name, declared in config.publishers.items():
        hidden = frozenset(
            str(key[3])
            for key in config._substituted
            if key[:3] == ("publishers", name, "options") and len(key) > 3
        )
        try:
            publishers[name] = publisher_of(declared, hidden)
        except PublisherProblem as problem:
            problems.append(place.message(("publishers", name, *problem.key), problem.message))
    stores: dict[str, Any] = {}
    routes: list[Route] = []
    for index, route_config in enumerate(config.routes):
        try:
            routes.append(_build_route(config, index, route_config, broker, publishers, stores))
        except _Problem as problem:
            problems.append(place.message(("routes", index, *problem.key), problem.message))
        except _Reported:
            continue
    if problems:
        raise ConfigurationError("\n".join(problems))
    config._stores = list(stores.values())
    return routes


def build_manager(config: LoaferConfig) -> Manager:
    """A :class:`~loafer_core.Manager` of every route, with the ``[manager]`` settings:
    its ``middleware`` (the tracing middleware outermost with ``tracing = true``); the
    Redis idempotency stores are among its services (checked at start, closed after the
    drain)."""
    problems: list[str] = []
    routes: list[Route] = []
    try:
        routes = build_routes(config)  # first: it puts the file's directory on sys.path
    except ConfigurationError as exc:
        problems.append(str(exc))  # and the [manager]'s problems too, below
    place = Place(config._source, config._root, None, config._substituted)
    middleware: list[Any] = []
    if config.manager.tracing:
        try:
            middleware.append(tracing_middleware())
        except MiddlewareProblem as problem:
            problems.append(place.message(("manager", "tracing"), problem.message))
    for index, path in enumerate(config.manager.middleware):
        try:
            middleware.append(middleware_of(path))
        except MiddlewareProblem as problem:
            problems.append(place.message(("manager", "middleware", index), problem.message))
    if problems:
        raise ConfigurationError("\n".join(problems))
    manager = Manager(
        routes, shutdown_timeout=config.manager.shutdown_timeout, middleware=middleware
    )
    manager.services.extend(config._stores)
    return manager


class _Reported(Exception):
    """The route cannot be built for a reason already reported (a publisher it names)."""


class _Problem(Exception):
    def __init__(self, key: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _build_route(
    config: LoaferConfig,
    index: int,
    route: RouteConfig,
    broker: MemoryBroker,
    publishers: Mapping[str, Any],
    stores: dict[str, Any],
) -> Route:
    try:
        cls = load_provider(route.provider)
    except ConfigurationError as exc:
        raise _Problem(("provider",), str(exc)) from None
    memory = isinstance(cls, type) and issubclass(cls, MemoryProvider)
    if route.publish is not None and not memory:
        raise _Problem(
            ("publish",),
            f"only memory routes take publish (this route's provider is {route.provider!r})",
        )
    hidden = frozenset(
        str(key[3])
        for key in config._substituted
        if key[:3] == ("routes", index, "provider_options") and len(key) > 3
    )
    try:
        kwargs = provider_arguments(
            cls,
            route.provider,
            route.queue,
            route.provider_options,
            {"broker": broker} if memory else {},
            hidden,
        )
    except OptionProblem as exc:
        raise _Problem(tuple(exc.key.split(".", 1)), exc.message) from None
    handler = _imported(route.handler, "handler")
    options: dict[str, Any] = {
        "name": route.name,
        "max_concurrency": route.max_concurrency,
        "handler_timeout": route.handler_timeout,
        "max_attempts": route.max_attempts,
    }
    if route.translator is False:
        options["translator"] = None
    elif route.translator is not None:
        options["translator"] = _imported(route.translator, "translator")
    if route.error_handler is not None:
        options["error_handler"] = _imported(route.error_handler, "error_handler")
    if route.retry is not None:
        options["retry"] = _retry_policy(route.retry)
    if route.publish_to is not None:
        try:
            targets = targets_of(route.publish_to, config.publishers.keys(), publishers)
        except ValueError as exc:
            raise _Problem(("publish_to",), str(exc)) from None
        if targets is None:
            raise _Reported  # a publisher it names failed: that error says why
        options["publish_to"] = targets
    middleware = _middleware(route, stores)
    if middleware:
        options["middleware"] = middleware
    provider = _provider(cls, route.provider, kwargs, hidden)
    try:
        built = Route(provider, handler, **options)
    except ConfigurationError as exc:
        raise _Problem((), str(exc)) from None
    if memory:
        config._memory_broker = broker
        assert route.queue is not None  # MemoryProvider requires it
        broker.declare(route.queue)
        for body in route.publish or ():
            broker.publish(route.queue, body)
    return built


def _provider(cls: Any, name: str, kwargs: dict[str, Any], hidden: frozenset[str]) -> Any:
    """``cls(**kwargs)``, its refusal said as a problem of the route's provider_options
    (of the option itself when a setting's check refused its value)."""
    try:
        return cls(**kwargs)
    except SettingError as exc:
        if exc.field not in kwargs:
            raise _Problem(("provider_options",), f"{name!r}: {exc}") from None
        raise _Problem(
            ("provider_options", exc.field), f"expected {exc.expected}, got {_got(exc, hidden)}"
        ) from None
    except ConfigurationError as exc:
        raise _Problem(("provider_options",), f"{name!r}: {exc}") from None
    except Exception as exc:
        raise _Problem(
            ("provider_options",),
            f"{name!r} ({cls.__name__}) refused its options: {type(exc).__name__}: {exc}",
        ) from None


def _got(exc: SettingError, hidden: frozenset[str]) -> str:
    """The refused value as an error shows it: never one from the environment."""
    if exc.field in hidden:
        return "the value of an environment variable (not shown)"
    return exc.got


def _middleware(route: RouteConfig, stores: dict[str, Any]) -> list[Any]:
    """The route's middleware: its idempotency (outermost), then ``middleware`` in order."""
    middleware: list[Any] = []
    if route.idempotency is not None:
        try:
            middleware.append(idempotency_of(route.idempotency, stores))
        except MiddlewareProblem as exc:
            raise _Problem(("idempotency", *exc.key), exc.message) from None
    for position, path in enumerate(route.middleware):
        try:
            middleware.append(middleware_of(path))
        except MiddlewareProblem as exc:
            raise _Problem(("middleware", position), exc.message) from None
    return middleware


def _imported(path: str, key: str) -> Any:
    try:
        obj = import_object(path)
    except ImportProblem as exc:
        raise _Problem((key,), str(exc)) from None
    if obj is None:
        # None would silently mean "the default" to Route (no translator, the default
        # error handler): a placeholder left in the module is an error, not a choice
        what = {"error_handler": "an error handler"}.get(key, f"a {key}")
        hint = " (write translator = false for no translator)" if key == "translator" else ""
        raise _Problem((key,), f"{path!r} is None, not {what}{hint}")
    return obj


def _retry_policy(retry: RetryConfig) -> RetryPolicy | None:
    if retry.disabled:
        return None
    try:
        return RetryPolicy(retry.initial, retry.factor, retry.maximum)
    except ConfigurationError as exc:  # pragma: no cover - the schema checks the same
        raise _Problem(("retry",), str(exc)) from None
