"""``MODULE:ATTR`` targets: import the module (the current directory importable) and turn
the attribute into routes or a :class:`~loafer_core.Manager`."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Iterable
from typing import Any

from loafer_core.errors import ConfigurationError
from loafer_core.manager import Manager
from loafer_core.route import Route

__all__ = ["importable_cwd", "load_target", "routes_of"]


def importable_cwd() -> str:
    """Put the current directory first on ``sys.path`` (as uvicorn and faststream do: the
    app's modules importable without installing them); return it."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    return cwd


def _import(module_name: str) -> Any:
    cwd = importable_cwd()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(f"{exc.name}.")
        ):
            raise ConfigurationError(
                f"cannot import module {module_name!r}: no such module (looked in {cwd} "
                "and the installed packages)"
            ) from exc
        raise ConfigurationError(
            f"cannot import module {module_name!r}: it imports {exc.name!r}, which is not installed"
        ) from exc
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc


def load_target(spec: str) -> Manager | list[Route]:
    """Resolve ``MODULE:ATTR`` to a Manager or a list of routes.

    ATTR may be a :class:`Manager`, a :class:`Route`, an iterable of routes, or a callable
    (sync or async, no arguments) returning one of those. Anything else, an unimportable
    module or a missing attribute raises :class:`ConfigurationError` naming it.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(
            f"target {spec!r}: expected MODULE:ATTR (e.g. 'app:routes' or 'app:manager')"
        )
    obj = _import(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"target {spec!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    return _coerce(spec, obj, called=False)


def _coerce(spec: str, obj: Any, *, called: bool) -> Manager | list[Route]:
    if isinstance(obj, Manager):
        return obj
    if isinstance(obj, Route):
        return [obj]
    if not called and callable(obj) and not isinstance(obj, type):
        try:
            result = obj()
            if inspect.isawaitable(result):
                result = asyncio.run(_await(result))
        except ConfigurationError:
            raise
        except Exception as exc:
            raise ConfigurationError(
                f"target {spec!r}: calling it raised {type(exc).__name__}: {exc}"
            ) from exc
        return _coerce(spec, result, called=True)
    if isinstance(obj, Iterable) and not isinstance(obj, str | bytes | dict):
        items = list(obj)
        bad = [type(i).__name__ for i in items if not isinstance(i, Route)]
        if bad or not items:
            what = f"items of type {', '.join(sorted(set(bad)))}" if bad else "no routes"
            raise ConfigurationError(f"target {spec!r}: expected a list of Route, got {what}")
        return items
    shown = "the callable's result" if called else "it"
    raise ConfigurationError(
        f"target {spec!r}: {shown} is a {type(obj).__name__}; expected a Manager, a Route, "
        "a list of routes, or a callable returning one"
    )


async def _await(awaitable: Any) -> Any:
    return await awaitable


def routes_of(target: Manager | list[Route]) -> list[Route]:
    """The routes of a resolved target."""
    return list(target.routes) if isinstance(target, Manager) else list(target)
