"""A route's provider arguments, checked against what the provider class accepts.

What a class accepts is read from its ``settings_type`` (:mod:`loafer_core.settings`:
the flat names of its frozen settings dataclass, each with the field's type) when it has
one, as every bundled provider and publisher does; else from its signature (a third
party's class), where an annotation written as a string is not evaluated: that option's
type is then left to the class.

The route's ``queue`` goes to the settings' ``primary`` field (or the provider's
``queue`` / ``address`` parameter; else its first parameter); ``provider_options`` are its
other keywords. Before the class is called: an option it does not take is refused
(listing those it takes, unless it takes ``**kwargs``), a required one missing is named,
and each option's type is checked with pydantic against the field's type (a string from
a ``${VAR}`` substitution is converted where the type wants a number or a boolean).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from loafer_cli._config_errors import describe_value
from loafer_core.settings import Settings, flat_fields

__all__ = ["Accepted", "OptionProblem", "accepted_options", "check_option", "provider_arguments"]

_QUEUE_PARAMETERS = ("queue", "address")
_SKIP = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_NO_TYPE: Any = object()


class OptionProblem(Exception):
    """A provider argument is wrong; ``key`` is the route key (``provider_options.x``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Accepted:
    """The keyword options a class takes: ``{name: type}`` (:data:`_NO_TYPE` when
    unknown), the required ones, whether it takes any other (``**kwargs``), and the
    option its first positional argument fills (``primary``)."""

    types: Mapping[str, Any]
    required: frozenset[str]
    takes_any: bool
    primary: str | None

    def names(self, without: frozenset[str] = frozenset()) -> list[str]:
        """The accepted names, sorted, less ``without``."""
        return sorted(n for n in self.types if n not in without)


def accepted_options(cls: Any) -> Accepted | None:
    """What ``cls`` accepts, or ``None`` when it cannot be told (no signature)."""
    settings_type = getattr(cls, "settings_type", None)
    if isinstance(settings_type, type) and issubclass(settings_type, Settings):
        return _from_settings(settings_type)
    try:
        parameters = inspect.signature(cls, eval_str=False).parameters
    except (TypeError, ValueError):
        return None
    named = {n: p for n, p in parameters.items() if p.kind not in _SKIP}
    return Accepted(
        types={
            n: _NO_TYPE
            if p.annotation is inspect.Parameter.empty or isinstance(p.annotation, str)
            else p.annotation
            for n, p in named.items()
        },
        required=frozenset(n for n, p in named.items() if p.default is inspect.Parameter.empty),
        takes_any=any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()),
        primary=next((n for n in _QUEUE_PARAMETERS if n in named), None),
    )


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _required(
    path: str, f: dataclasses.Field[Any], top: Mapping[str, dataclasses.Field[Any]]
) -> bool:
    """A field without a default, in a piece without one (or at the top)."""
    head = path.partition(".")[0]
    return not _has_default(f) and (head == path or not _has_default(top[head]))


def _from_settings(settings_type: type[Settings]) -> Accepted:
    # a nested piece (connection, timeouts, ...) is an object in Python; a config file
    # sets its fields by their flat names (url, poll_timeout, ...), which say what is
    # required of it
    top = {f.name: f for f in dataclasses.fields(settings_type)}  # type: ignore[arg-type]
    fields = {
        key: (path, f)
        for key, (path, f) in flat_fields(settings_type).items()
        if not (isinstance(f.type, type) and issubclass(f.type, Settings))
    }
    required = {key for key, (path, f) in fields.items() if _required(path, f, top)}
    return Accepted(
        types={key: f.type for key, (_, f) in fields.items()},
        required=frozenset(required),
        takes_any=False,
        primary=settings_type.primary,
    )


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
    accepted = accepted_options(cls)
    if accepted is None:
        return {**options, **injected}  # nothing to check against: the class decides
    queue_parameter = accepted.primary
    if queue_parameter is None:
        queue_parameter = next((n for n in accepted.types if n not in injected), None)
    listed = accepted.names(frozenset({*injected, *([queue_parameter] if queue_parameter else [])}))

    for key in options:
        if key in injected:
            raise OptionProblem(
                f"provider_options.{key}", f"set by loafer itself for {owner}; remove it"
            )
        if key == queue_parameter:
            raise OptionProblem(
                f"provider_options.{key}",
                "give the queue as the route's 'queue' key, not in provider_options",
            )
        if key not in accepted.types and not accepted.takes_any:
            close = difflib.get_close_matches(key, listed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise OptionProblem(
                f"provider_options.{key}",
                f"unknown option of {owner}{hint}; it takes: {', '.join(listed) or 'none'}",
            )

    kwargs: dict[str, Any] = dict(injected)
    if queue is not None:
        if queue_parameter is None:
            raise OptionProblem("queue", f"{owner} takes no queue; remove the key")
        kwargs[queue_parameter] = queue
    for key, value in options.items():
        try:
            kwargs[key] = check_option(value, accepted.types.get(key, _NO_TYPE), key in hidden)
        except ValueError as exc:
            raise OptionProblem(f"provider_options.{key}", str(exc)) from None
    for name in sorted(accepted.required):
        if name not in kwargs:
            if name == queue_parameter:
                raise OptionProblem(
                    "queue", f"required key missing (the queue or address {owner} reads from)"
                )
            raise OptionProblem(f"provider_options.{name}", f"required option of {owner} missing")
    return kwargs


def check_option(value: Any, wanted: Any, hidden: bool) -> Any:
    """``value`` validated against the type ``wanted`` (when pydantic can);
    ``ValueError`` saying what was expected and got (never a ``hidden`` value)."""
    if wanted is _NO_TYPE:
        return value
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(wanted)
    except Exception:  # a type pydantic has no schema for (ssl.SSLContext)
        return value
    try:
        # strict, but for a string from ${VAR}: that may be converted ("10" -> 10)
        checked = adapter.validate_python(value, strict=not hidden)
    except ValidationError as exc:
        got = "the value of an environment variable (not shown)" if hidden else None
        raise ValueError(
            f"expected {_wanted(wanted, exc)}, got {got or describe_value(value)}"
        ) from None
    # a string converted to a number or a bool (from ${VAR}) takes its converted value
    return checked if isinstance(value, str) else value


def _wanted(wanted: Any, error: ValidationError) -> str:
    """What the option takes: the allowed values of a Literal, else its type."""
    first = error.errors()[0]
    if first["type"] == "literal_error":
        return str(first["msg"]).removeprefix("Input should be ")
    return str(getattr(wanted, "__name__", None) or wanted).replace("typing.", "")
