"""A route's provider arguments, checked against the provider class's signature.

The route's ``queue`` goes to the provider's ``queue`` parameter (``address`` for AMQP
1.0; else its first parameter); ``provider_options`` are its other keywords. Before the
class is called: an option it does not take is refused (listing those it takes, unless
it takes ``**kwargs``), a required one missing is named, and each option's type is
checked with pydantic against the parameter's annotation (a string from a ``${VAR}``
substitution is converted where the annotation wants a number or a boolean).
"""

from __future__ import annotations

import difflib
import inspect
import sys
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from loafer_cli._config_errors import describe_value

__all__ = ["OptionProblem", "annotations_of", "check_option", "provider_arguments"]

_QUEUE_PARAMETERS = ("queue", "address")
_SKIP = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


class OptionProblem(Exception):
    """A provider argument is wrong; ``key`` is the route key (``provider_options.x``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def provider_arguments(
    cls: type[Any],
    provider: str,
    queue: str | None,
    options: Mapping[str, Any],
    injected: Mapping[str, Any],
    hidden: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Keyword arguments for ``cls(**kwargs)``; raises :class:`OptionProblem`.

    ``injected`` are arguments loafer fills itself (the memory broker); ``hidden`` are
    the option names whose values came from the environment (never shown).
    """
    owner = f"{provider!r} ({cls.__name__})"
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {**options, **injected}  # no signature to check: the class decides
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = {n: p for n, p in parameters.items() if p.kind not in _SKIP}
    queue_parameter = next((n for n in _QUEUE_PARAMETERS if n in named), None)
    if queue_parameter is None:
        queue_parameter = next((n for n in named if n not in injected), None)
    accepted = sorted(n for n in named if n not in injected and n != queue_parameter)

    for key in options:
        if key in injected:
            raise OptionProblem(
                f"provider_options.{key}", f"set by loafer itself for {owner}; remove it"
            )
        if key == queue_parameter and key in named:
            raise OptionProblem(
                f"provider_options.{key}",
                "give the queue as the route's 'queue' key, not in provider_options",
            )
        if key not in named and not takes_any:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise OptionProblem(
                f"provider_options.{key}",
                f"unknown option of {owner}{hint}; it takes: {', '.join(accepted) or 'none'}",
            )

    kwargs: dict[str, Any] = dict(injected)
    if queue is not None:
        if queue_parameter is None:
            raise OptionProblem("queue", f"{owner} takes no queue; remove the key")
        kwargs[queue_parameter] = queue
    hints = annotations_of(cls)
    for key, value in options.items():
        kwargs[key] = _checked(key, value, named.get(key), hints.get(key), key in hidden)
    for name, parameter in named.items():
        if parameter.default is inspect.Parameter.empty and name not in kwargs:
            if name == queue_parameter:
                raise OptionProblem(
                    "queue", f"required key missing (the queue or address {owner} reads from)"
                )
            raise OptionProblem(f"provider_options.{name}", f"required option of {owner} missing")
    return kwargs


def _checked(
    key: str, value: Any, parameter: inspect.Parameter | None, hint: Any, hidden: bool
) -> Any:
    try:
        return check_option(key, value, parameter, hint, hidden)
    except ValueError as exc:
        raise OptionProblem(f"provider_options.{key}", str(exc)) from None


def check_option(
    key: str, value: Any, parameter: inspect.Parameter | None, hint: Any, hidden: bool
) -> Any:
    """``value`` validated against the parameter's annotation (when pydantic can);
    ``ValueError`` saying what was expected and got (never a ``hidden`` value)."""
    if parameter is None or hint is None:
        return value
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(hint)
    except Exception:  # an annotation pydantic has no schema for (ssl.SSLContext)
        return value
    try:
        # strict, but for a string from ${VAR}: that may be converted ("10" -> 10)
        checked = adapter.validate_python(value, strict=not hidden)
    except ValidationError as exc:
        got = "the value of an environment variable (not shown)" if hidden else None
        raise ValueError(
            f"expected {_wanted(parameter, exc)}, got {got or describe_value(value)}"
        ) from None
    # a string converted to a number or a bool (from ${VAR}) takes its converted value
    return checked if isinstance(value, str) else value


def _wanted(parameter: inspect.Parameter, error: ValidationError) -> str:
    """What the parameter takes: the allowed values of a Literal, else its annotation."""
    first = error.errors()[0]
    if first["type"] == "literal_error":
        return str(first["msg"]).removeprefix("Input should be ")
    wanted = parameter.annotation
    if isinstance(wanted, str):
        return wanted
    return str(getattr(wanted, "__name__", None) or wanted)


def annotations_of(cls: type[Any]) -> dict[str, Any]:
    """The ``__init__`` parameters' annotations, resolved where they can be."""
    init = cls.__init__
    try:
        return typing.get_type_hints(init)
    except Exception:
        pass
    module = sys.modules.get(getattr(cls, "__module__", ""), None)
    namespace = dict(vars(module)) if module is not None else {}
    hints: dict[str, Any] = {}
    for name, annotation in getattr(init, "__annotations__", {}).items():
        if not isinstance(annotation, str):
            hints[name] = annotation
            continue
        try:
            # the plugin's own annotation text (from its source code, not from the config)
            hints[name] = eval(annotation, namespace)
        except Exception:
            continue
    return hints
