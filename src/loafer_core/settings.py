"""Settings objects: what a provider or publisher is configured with, as frozen dataclasses.

Every bundled provider and publisher takes one settings object (``RabbitProvider(
RabbitSettings(queue="orders", connection=Connection(url=...)))``) and, as a thin
adapter kept for today's calls and config files, the same values as flat keywords
(``RabbitProvider("orders", url=..., poll_timeout=2)``), mapped onto the settings by
:func:`from_flat`. The shared pieces live here:

- :class:`Connection`: where and how to connect (URL, connection name, TLS, the client
  library's extra options). Its ``repr`` masks the URL's password and every query value
  and shows only the option names.
- :class:`Timeouts`: how long each kind of wait may last.

A plugin's settings class subclasses :class:`Settings` and is a
``@dataclass(frozen=True, kw_only=True)``; each field that needs a check declares it
with :func:`setting` (``check=seconds``, ``whole(1)``, ``choice("a", "b")``, ...), run at
construction: a wrong value is a :class:`SettingError` (a ``ConfigurationError``) naming
the field and what it expects. :attr:`Settings.flat` maps the historical flat keyword
names onto nested fields (``{"poll_timeout": "timeouts.poll"}``); the settings' own
fields are flat names too. The class's ``settings_type`` attribute is how the config
loader (``loafer run --config``) and ``provider_options`` find them: no constructor
signature is read and no annotation string is evaluated (settings modules keep their
annotations as real types, without ``from __future__ import annotations``).
"""

import contextlib
import dataclasses
import difflib
import math
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from loafer_core.errors import ConfigurationError

__all__ = [
    "Check",
    "Connection",
    "SettingError",
    "Settings",
    "Timeouts",
    "choice",
    "flat_fields",
    "flat_names",
    "from_flat",
    "name",
    "optional",
    "seconds",
    "setting",
    "settings_of",
    "shared_flat",
    "whole",
]

S = TypeVar("S", bound="Settings")

Check = Callable[[Any], str | None]
"""A field's check: returns ``None`` when the value is right, else what it expects
(``"seconds > 0"``), used in the error message."""


class SettingError(ConfigurationError):
    """A setting has a wrong value: ``owner(field=...): expected ..., got ...``.

    ``field`` is the name the user wrote (a flat keyword such as ``poll_timeout`` when
    the settings were built by :func:`from_flat`); a secret value is never shown.
    """

    def __init__(
        self, owner: str, field: str, expected: str, value: Any, *, secret: bool = False
    ) -> None:
        got = "a value (not shown: it is a secret)" if secret else repr(value)
        super().__init__(f"{owner}({field}=...): expected {expected}, got {got}")
        self.owner = owner
        self.field = field
        self.expected = expected
        self.secret = secret
        #: what was given, as the message shows it
        self.got = got


# -- checks ---------------------------------------------------------------------------


def seconds(value: Any) -> str | None:
    """A finite number of seconds > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        return "seconds > 0"
    return None


def whole(minimum: int) -> Check:
    """An int >= ``minimum`` (not a bool)."""

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return f"an int >= {minimum}"
        return None

    return check


def choice(*values: Any) -> Check:
    """One of ``values`` (compared with ``==`` and by type, so ``1`` is not ``True``)."""
    shown = ", ".join(repr(v) for v in values[:-1])
    shown = f"{shown} or {values[-1]!r}" if shown else repr(values[-1])

    def check(value: Any) -> str | None:
        if any(type(value) is type(v) and value == v for v in values):
            return None
        return shown

    return check


def name(value: Any) -> str | None:
    """A non-empty string."""
    if isinstance(value, str) and value:
        return None
    return "a non-empty string"


def optional(check: Check) -> Check:
    """``check``, or ``None``."""

    def checked(value: Any) -> str | None:
        if value is None:
            return None
        wanted = check(value)
        return None if wanted is None else f"{wanted} or None"

    return checked


def setting(
    default: Any = dataclasses.MISSING,
    *,
    check: Check | None = None,
    secret: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A settings field with its ``check`` (run at construction) and whether it holds a
    ``secret`` (never shown in a repr or an error)."""
    metadata = {"check": check, "secret": secret}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(
            default_factory=default_factory, metadata=metadata, repr=not secret
        )
    return dataclasses.field(default=default, metadata=metadata, repr=not secret)


# -- the base class --------------------------------------------------------------------


class Settings:
    """Base of every settings dataclass: runs the fields' checks, freezes mappings.

    Subclasses are ``@dataclass(frozen=True, kw_only=True)``. Class attributes:

    - :attr:`flat`: extra flat keyword names, each mapped to a dotted field path
      (``"poll_timeout": "timeouts.poll"``).
    - :attr:`primary`: the field a provider takes as its first positional argument
      (``"queue"``); a config file's route ``queue`` key sets it.
    """

    flat: ClassVar[Mapping[str, str]] = MappingProxyType({})
    primary: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Mapping) and not isinstance(value, MappingProxyType):
                object.__setattr__(self, f.name, MappingProxyType(dict(value)))
            check = f.metadata.get("check")
            if check is None:
                continue
            wanted = check(value)
            if wanted is not None:
                raise SettingError(owner, f.name, wanted, value, secret=f.metadata["secret"])

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` (field names of this class), checked again."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


# -- shared pieces ---------------------------------------------------------------------


_CONNECTION_FLAT = {
    "url": "connection.url",
    "connection_name": "connection.name",
    "ssl_context": "connection.tls",
    "connection_options": "connection.options",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Connection(Settings):
    """Where and how to connect.

    :param url: the broker's URL (the password inside it is never shown).
    :param name: the connection's name, shown in the broker's tools (``None``: the
        plugin's default, usually ``loafer:<queue>``).
    :param tls: an ``ssl.SSLContext`` for TLS connections (``None``: the client library's
        default for the URL's scheme).
    :param options: extra keyword arguments for the client library's connect call
        (their values are never shown: they may hold passwords).
    """

    url: str = setting(check=name)
    name: str | None = setting(None, check=optional(name))
    tls: Any = None
    options: Mapping[str, Any] = setting(default_factory=dict)

    def __repr__(self) -> str:
        from loafer_core.kit._secrets import UrlRules, mask_url

        masked = mask_url(self.url, UrlRules(schemes=(), lone_user_is_secret=True, mask_query=True))
        tls = "on" if self.tls is not None else None
        return (
            f"Connection(url={masked!r}, name={self.name!r}, tls={tls!r}, "
            f"options={sorted(self.options)!r})"
        )


_TIMEOUTS_FLAT = {
    "connect_timeout": "timeouts.connect",
    "close_timeout": "timeouts.close",
    "poll_timeout": "timeouts.poll",
    "publish_timeout": "timeouts.publish",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timeouts(Settings):
    """How long each kind of wait may last, in seconds (each a number > 0).

    :param connect: the first connection (a start-up that cannot connect fails then).
    :param close: ``close()``'s goodbyes to the broker (pending acks, cancels).
    :param poll: one fetch call's wait when nothing arrives.
    :param publish: a publisher confirm (also a provider's own publishes: retries, dead
        letters).
    :param reconnect: the pause between reconnection attempts.
    """

    connect: float = setting(30.0, check=seconds)
    close: float = setting(10.0, check=seconds)
    poll: float = setting(5.0, check=seconds)
    publish: float = setting(30.0, check=seconds)
    reconnect: float = setting(2.0, check=seconds)


#: The usual flat names of :class:`Connection` and :class:`Timeouts` fields, for
#: :func:`shared_flat`.
SHARED_FLAT: Mapping[str, str] = MappingProxyType({**_CONNECTION_FLAT, **_TIMEOUTS_FLAT})


# -- the flat adapter ------------------------------------------------------------------


def _nested_fields(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def flat_fields(settings_type: type[Settings]) -> dict[str, tuple[str, dataclasses.Field[Any]]]:
    """Every flat keyword ``settings_type`` accepts: ``{flat name: (dotted path, field)}``.

    Its own fields (``queue``, ``connection``, ``timeouts``, ...) and the names of
    :attr:`Settings.flat` (``poll_timeout`` for ``timeouts.poll``).
    """
    names = {name: name for name in _nested_fields(settings_type)}
    names.update(settings_type.flat)
    return {key: (path, _field_at(settings_type, path)) for key, path in names.items()}


def shared_flat(*names: str) -> dict[str, str]:
    """The shared flat names a plugin's settings take, mapped to their paths:
    ``flat = {**shared_flat("url", "poll_timeout"), "reconnect_interval":
    "timeouts.reconnect"}``. Known names: those of :data:`SHARED_FLAT`."""
    unknown = [n for n in names if n not in SHARED_FLAT]
    if unknown:
        raise TypeError(f"shared_flat: unknown {unknown}; known: {sorted(SHARED_FLAT)}")
    return {n: SHARED_FLAT[n] for n in names}


def _field_at(settings_type: type[Any], path: str) -> dataclasses.Field[Any]:
    cls: Any = settings_type
    parts = path.split(".")
    for i, part in enumerate(parts):
        fields = _nested_fields(cls)
        if part not in fields:
            raise TypeError(f"{settings_type.__name__}.flat: no field {path!r}")
        f = fields[part]
        if i == len(parts) - 1:
            return f
        cls = _settings_class(settings_type, part)
    raise AssertionError(path)  # pragma: no cover


def _settings_class(settings_type: type[Any], field_name: str) -> type[Settings]:
    """The settings class of a nested field: its default's class, else its type."""
    f = _nested_fields(settings_type)[field_name]
    if f.default is not dataclasses.MISSING and isinstance(f.default, Settings):
        return type(f.default)
    if isinstance(f.type, type) and issubclass(f.type, Settings):
        return f.type
    raise TypeError(f"{settings_type.__name__}.{field_name} is not a settings field")


def flat_names(settings_type: type[Settings]) -> list[str]:
    """The flat keyword names ``settings_type`` accepts, sorted."""
    return sorted(flat_fields(settings_type))


def _default(settings_type: type[Any], field_name: str) -> Any:
    """A field's default (made by its factory), or ``None`` when it has none."""
    f = _nested_fields(settings_type)[field_name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def from_flat(settings_type: type[S], owner: str, values: Mapping[str, Any]) -> S:
    """``settings_type`` built from flat keywords (``url=..., poll_timeout=2``).

    An unknown keyword is a ``ConfigurationError`` naming ``owner`` with the closest
    accepted name; a wrong value a :class:`SettingError` naming the flat keyword (as the
    user wrote it) and ``owner``.
    """
    accepted = flat_fields(settings_type)
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    given_as: dict[str, str] = {}
    for key, value in values.items():
        if key not in accepted:
            close = difflib.get_close_matches(key, list(accepted), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(
                f"{owner}({key}=...): unknown option{hint}; it takes: {', '.join(sorted(accepted))}"
            )
        path = accepted[key][0]
        head, dot, rest = path.partition(".")
        if dot:
            if rest in nested.setdefault(head, {}):
                raise ConfigurationError(
                    f"{owner}: {key!r} and {given_as[path]!r} set the same thing; give one"
                )
            nested[head][rest] = value
        else:
            top[head] = value
        given_as[path] = key
    for head, changes in nested.items():
        if head in top:
            names = sorted(given_as[f"{head}.{k}"] for k in changes)
            raise ConfigurationError(f"{owner}: {head!r} given with {names}; give one or the other")
        base = _default(settings_type, head)
        with _as_flat(owner, given_as, values, head):
            if base is None:
                top[head] = _settings_class(settings_type, head)(**changes)
            else:
                top[head] = dataclasses.replace(base, **changes)
    with _as_flat(owner, given_as, values, None):
        return settings_type(**top)


@contextlib.contextmanager
def _as_flat(
    owner: str, given_as: Mapping[str, str], values: Mapping[str, Any], head: str | None
) -> Iterator[None]:
    """A :class:`SettingError` or a missing field, said with the user's flat names."""
    try:
        yield
    except SettingError as exc:
        path = f"{head}.{exc.field}" if head else exc.field
        key = given_as.get(path, path)
        raise SettingError(owner, key, exc.expected, values.get(key), secret=exc.secret) from None
    except TypeError as exc:
        raise ConfigurationError(f"{owner}: {_missing(exc)}") from None


def _missing(exc: TypeError) -> str:
    text = str(exc)
    if "required keyword-only argument" in text:
        return "required " + text.partition("required ")[2].replace(" argument", "")
    return text


def settings_of(settings_type: type[S], owner: str, settings: Any, options: Mapping[str, Any]) -> S:
    """What ``owner(settings, **options)`` was given, as one ``settings_type``: the thin
    adapter every provider's and publisher's ``__init__`` calls.

    A ``settings_type`` is taken as it is (no options beside it: ``settings.replace(...)``
    makes a changed copy); else the settings are built by :func:`from_flat` from
    ``options``, a ``str`` ``settings`` (today's first positional argument) filling the
    :attr:`Settings.primary` field. Anything else is a ``ConfigurationError``.
    """
    if isinstance(settings, settings_type):
        if options:
            raise ConfigurationError(
                f"{owner}: given a {settings_type.__name__} and options "
                f"{sorted(options)} beside it; give one or the other (settings.replace(...) "
                "makes a changed copy)"
            )
        return settings
    values = dict(options)
    primary = settings_type.primary
    if settings is not None:
        if not isinstance(settings, str) or primary is None:
            raise ConfigurationError(
                f"{owner}: expected a {settings_type.__name__} or a {primary or 'name'}, got "
                f"{type(settings).__name__}"
            )
        if values.get(primary) is not None:
            raise ConfigurationError(
                f"{owner}: {primary!r} given twice (first positional and as a keyword)"
            )
        values[primary] = settings
    return from_flat(settings_type, owner, values)
