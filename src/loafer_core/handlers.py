"""Several handlers on one route, each message to the first that takes it.

One queue often carries several kinds of event. :class:`Handlers` is a handler that picks,
for each message, the first of its handlers whose key matches the message's
*discriminator* (a header such as ``type``, or a field of the body) or whose predicate
accepts the content; the order is the order given. Each handler may be typed (see
:mod:`loafer_core.typed`): its content is validated into its own type. A message no
handler takes gets the ``unmatched`` outcome (REJECT, with the reason, by default)::

    handlers = Handlers(discriminator=header("type"))

    @handlers.on("order.created")
    async def created(order: OrderCreated, metadata): ...

    @handlers.on(when=lambda content, metadata: content.get("refund"))
    def refunded(content, metadata): ...

    route = Route(provider, handlers)      # or Route(provider, Handlers([...]))

Handlers can also be given as a list of :func:`on` entries, or registered later on the
route: ``@route.on("order.cancelled")``.

A class as the key stands for the name loafer's publishers give that type in the
``type`` header (:func:`~loafer_core.typed.message_type`: its ``__message_type__``, else
its ``__name__``): ``@handlers.on(OrderCreated)`` takes ``publisher.publish(OrderCreated(...))``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from loafer_core._handler import adapt_typed
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import REJECT, Outcome

__all__ = ["Discriminator", "Entry", "Handlers", "field", "header", "on"]

Discriminator = Callable[[Any, Mapping[str, Any]], Any]
"""``(content, metadata) -> key``: what a message says it is (None if it says nothing)."""

_UNSET: Any = object()


def header(name: str) -> Discriminator:
    """The message's header ``name`` (``metadata["headers"][name]``, or a top-level
    metadata key of that name, as SQS message attributes are)."""

    def read(content: Any, metadata: Mapping[str, Any]) -> Any:
        headers = metadata.get("headers")
        if isinstance(headers, Mapping) and name in headers:
            return headers[name]
        attributes = metadata.get("MessageAttributes")
        if isinstance(attributes, Mapping) and name in attributes:
            value = attributes[name]
            return value.get("StringValue") if isinstance(value, Mapping) else value
        return metadata.get(name)

    read.__qualname__ = f"header({name!r})"
    return read


def field(name: str) -> Discriminator:
    """The body's field ``name`` (content a mapping; None otherwise)."""

    def read(content: Any, metadata: Mapping[str, Any]) -> Any:
        return content.get(name) if isinstance(content, Mapping) else None

    read.__qualname__ = f"field({name!r})"
    return read


@dataclass(frozen=True)
class Entry:
    """One handler of a :class:`Handlers`: taken for ``key`` or when ``when`` says so."""

    handler: Any
    key: Any = _UNSET
    when: Callable[[Any, Mapping[str, Any]], Any] | None = None


def on(key: Any = _UNSET, handler: Any = None, *, when: Any = None) -> Entry:
    """An entry for the list form: ``on("order.created", created)``,
    ``on(when=predicate, handler=fn)``."""
    if handler is None:
        raise ConfigurationError("on(...): a handler is required")
    return _entry(key, handler, when)


def _entry(key: Any, handler: Any, when: Any) -> Entry:
    if isinstance(key, type):
        from loafer_core.typed import message_type

        key = message_type(key)
    if (key is _UNSET) == (when is None):
        raise ConfigurationError(
            "Handlers: give each handler a key (matched against the discriminator) or "
            "when=predicate(content, metadata), exactly one of them"
        )
    if when is not None and not callable(when):
        raise ConfigurationError(f"Handlers: when= must be callable, got {type(when).__name__}")
    return Entry(handler, key, when)


class Handlers:
    """A handler made of several (see the module docstring).

    Arguments:
        entries: :func:`on` entries, in order (more can be added with :meth:`on`).
        discriminator: ``(content, metadata) -> key`` (:func:`header`, :func:`field`);
            needed by entries with a key.
        unmatched: the outcome of a message no handler takes (REJECT with the reason).
    """

    def __init__(
        self,
        entries: Iterable[Entry] = (),
        *,
        discriminator: Discriminator | None = None,
        unmatched: Outcome | None = None,
    ) -> None:
        if isinstance(discriminator, str):
            raise ConfigurationError(
                f"Handlers(discriminator=...): got the string {discriminator!r}; pass "
                f"header({discriminator!r}) or field({discriminator!r}), not a name"
            )
        if discriminator is not None and not callable(discriminator):
            raise ConfigurationError(
                "Handlers(discriminator=...): expected header('type'), field('type') or a "
                f"callable (content, metadata), got {type(discriminator).__name__}"
            )
        if unmatched is not None and not isinstance(unmatched, Outcome):
            raise ConfigurationError(
                f"Handlers(unmatched=...): expected an Outcome, got {type(unmatched).__name__}"
            )
        self.discriminator = discriminator
        self.unmatched = unmatched
        self._entries: list[tuple[Entry, Any]] = []  # (entry, its adapted call)
        self._by_key: dict[Any, Any] = {}
        for entry in entries:
            if not isinstance(entry, Entry):
                raise ConfigurationError(
                    f"Handlers([...]): expected on(...) entries, got {type(entry).__name__}"
                )
            self._add(entry)

    def __repr__(self) -> str:
        keys = [e.key if e.key is not _UNSET else "<when>" for e, _ in self._entries]
        return f"<Handlers {keys}>"

    @property
    def entries(self) -> tuple[Entry, ...]:
        """The entries, in order (to describe the route: ``loafer asyncapi``)."""
        return tuple(entry for entry, _ in self._entries)

    def on(self, key: Any = _UNSET, *, when: Any = None) -> Callable[[Any], Any]:
        """Decorator: register the function for ``key`` (or ``when``); returns it."""

        def register(handler: Any) -> Any:
            self._add(_entry(key, handler, when))
            return handler

        return register

    def _add(self, entry: Entry) -> None:
        if isinstance(entry.key, type):  # an Entry built by hand: as on() would
            entry = _entry(entry.key, entry.handler, entry.when)

        if entry.key is not _UNSET:
            if self.discriminator is None:
                raise ConfigurationError(
                    f"Handlers: a handler for key {entry.key!r} needs a discriminator "
                    "(Handlers(discriminator=header('type')) or field('type'))"
                )
            if entry.key in self._by_key:
                raise ConfigurationError(f"Handlers: two handlers for key {entry.key!r}")
        call = adapt_typed(entry.handler)
        self._entries.append((entry, call))
        if entry.key is not _UNSET:
            self._by_key[entry.key] = call

    async def handle(self, content: Any, metadata: Mapping[str, Any]) -> Any:
        """Call the first handler that takes this message; the unmatched outcome else."""
        key = self.discriminator(content, metadata) if self.discriminator is not None else None
        for entry, call in self._entries:
            if entry.key is not _UNSET:
                if key is None or entry.key != key:
                    continue
            elif not entry.when(content, metadata):  # type: ignore[misc]
                continue
            return await call(content, metadata)
        if self.unmatched is not None:
            return self.unmatched
        said = f"discriminator {key!r}" if self.discriminator is not None else "its content"
        return REJECT(f"no handler takes this message ({said})")
