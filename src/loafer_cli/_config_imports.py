"""Import the objects a config file names as ``"package.module:attribute"``.

A class is instantiated with no arguments (a handler class with ``handle()``, a
translator class, an error handler class with ``__call__``); to configure one, build
the instance in your module and name the instance instead.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ImportProblem", "import_object"]


class ImportProblem(Exception):
    """The object cannot be had; the message says why (naming the path)."""


def import_object(path: str) -> Any:
    """The object at ``path`` (``module:attr`` or ``module:Class.attr``); a class is
    instantiated with no arguments."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if missing == module_name or module_name.startswith(f"{missing}."):
            raise ImportProblem(
                f"cannot import {path!r}: no module named {missing!r} (is it installed, "
                "or in the directory you run from?)"
            ) from exc
        raise ImportProblem(
            f"cannot import {path!r}: importing {module_name!r} failed: it imports "
            f"{missing!r}, which is not installed"
        ) from exc
    except Exception as exc:
        raise ImportProblem(
            f"cannot import {path!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = module
    walked = module_name
    for name in attribute.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise ImportProblem(
                f"cannot import {path!r}: {walked!r} has no attribute {name!r}"
            ) from None
        walked = f"{walked}:{name}" if walked == module_name else f"{walked}.{name}"
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as exc:
            raise ImportProblem(
                f"{path!r} is a class and cannot be created with no arguments "
                f"({type(exc).__name__}: {exc}); name an instance instead"
            ) from exc
    return obj
