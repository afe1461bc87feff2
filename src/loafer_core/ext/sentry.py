"""An error handler that reports to Sentry: Loafer 2.x's ``loafer.ext.sentry``, kept.

::

    import sentry_sdk
    from loafer_core.ext.sentry import sentry_handler

    sentry_sdk.init(dsn=...)
    route = Route(provider, handler, error_handler=sentry_handler(sentry_sdk))

Each error is captured with ``capture_exception``, with the raw message as the event's
extra ``message`` (as Loafer 2.x did; strings and bytes in it are cut to
``message_limit`` characters), and the delivery is settled with the configured outcome:
RETRY by default, ACCEPT with ``delete_message=True``, or any ``outcome=``.

Both of olist-loafer's call styles work when the handler is called from your own error
handler: 6.x's sync ``if sentry(exc_type, exc, message): ...`` (the result is truthy when
the message is deleted) and 7.0's ``await sentry(exc_type, exc, message)`` inside an async
error handler (awaiting gives the :class:`~loafer_core.outcome.Outcome`). The error is
captured once, when the handler is called, whether or not its result is awaited.

Needs ``sentry-sdk>=2`` (``pip install 'loafer-core[sentry]'``), imported only when no
``sdk_or_hub`` is given.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any, Protocol

from loafer_core.errors import ConfigurationError
from loafer_core.outcome import ACCEPT, RETRY, Outcome

__all__ = [
    "MESSAGE_LIMIT",
    "SentryCapture",
    "SentryErrorHandler",
    "SentryReport",
    "bounded",
    "sentry_handler",
]

MESSAGE_LIMIT = 4096
"""Characters of each string (or bytes) of the raw message sent to Sentry, by default."""

_DEPTH = 5  # nesting of the raw message kept; deeper values are sent as a cut repr()
_MISSING: Any = object()


class SentryCapture(Protocol):
    """What reports to Sentry: the ``sentry_sdk`` module, a ``sentry_sdk.Scope`` or a
    (deprecated) ``sentry_sdk.Hub``; only ``capture_exception`` is used."""

    def capture_exception(self, error: Any = ..., /, **scope_kwargs: Any) -> Any:
        """Capture ``error``, with ``extras``/``contexts``/``tags`` for this event only."""
        ...


class SentryReport:
    """What a :class:`SentryErrorHandler` call returns, once the error was captured.

    It serves each of olist-loafer's call styles:

    - truthy when the message is to be deleted (the outcome is ACCEPT: 6.x's
      ``delete_message=True``), falsy otherwise, as 6.x's ``bool``;
    - awaitable, as 7.0's handler was (an ``async def``): ``await report`` gives
      :attr:`outcome`, so ``await sentry(exc_type, exc, message)`` works in an async error
      handler, and so does ``return await sentry(...)``;
    - a route given it as an error handler's result settles the message with
      :attr:`outcome` (the route awaits awaitable results); it compares equal to that
      ``Outcome`` (and to ``True``/``False`` by its truth).

    Awaiting it does nothing more: the error was captured when the handler was called,
    once, whether or not the report is ever awaited.
    """

    __slots__ = ("outcome",)
    __hash__ = None  # type: ignore[assignment] # equal to an Outcome and to a bool

    def __init__(self, outcome: Outcome) -> None:
        #: how the message is to be settled
        self.outcome = outcome

    def __bool__(self) -> bool:
        return self.outcome.is_accept

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SentryReport):
            return self.outcome == other.outcome
        if isinstance(other, Outcome):
            return self.outcome == other
        if isinstance(other, bool):
            return bool(self) is other
        return NotImplemented

    def __await__(self) -> Generator[Any, None, Outcome]:
        return self._outcome().__await__()

    async def _outcome(self) -> Outcome:
        return self.outcome

    def __repr__(self) -> str:
        return f"SentryReport({self.outcome!r})"


class SentryErrorHandler:
    """A route's error handler reporting to Sentry (build it with :func:`sentry_handler`).

    Called as ``(exc_type, exc, message)``, as routes call error handlers, or as Loafer
    2.x's code called its handler: ``(exc_info, message)``. Sync: a route runs it on its
    threads, so Sentry's event processing (reading source lines, ``before_send``) never
    blocks the event loop (called from your own async error handler, it captures on the
    event loop, as olist-loafer 7.0's did). Captures at once and returns a
    :class:`SentryReport` of :attr:`outcome`: truthy per ``delete_message`` (6.x) and
    awaitable (7.0). Should capturing raise, the route logs the failure and RETRIES the
    message, whatever the configured outcome.
    """

    def __init__(self, sentry: SentryCapture, outcome: Outcome, message_limit: int) -> None:
        self.sentry = sentry
        self.outcome = outcome
        self.message_limit = message_limit

    def __call__(
        self, exc_type_or_info: Any, exc_or_message: Any, message: Any = _MISSING
    ) -> SentryReport:
        if message is _MISSING:  # Loafer 2.x's (exc_info, message)
            exc_info, message = exc_type_or_info, exc_or_message
            exc = exc_info[1]
        else:
            exc = exc_or_message
        self.sentry.capture_exception(exc, extras={"message": bounded(message, self.message_limit)})
        return SentryReport(self.outcome)

    def __repr__(self) -> str:
        return f"sentry_handler(outcome={self.outcome!r})"


def sentry_handler(
    sdk_or_hub: SentryCapture | None = None,
    delete_message: bool = False,
    *,
    outcome: Outcome | None = None,
    message_limit: int = MESSAGE_LIMIT,
) -> SentryErrorHandler:
    """An error handler capturing each error in Sentry, then settling the message.

    Arguments:
        sdk_or_hub: what captures: the ``sentry_sdk`` module (as Loafer 2.x took it), a
            ``sentry_sdk.Scope`` or a ``Hub``; by default the ``sentry_sdk`` module,
            imported now. Initialise it yourself (``sentry_sdk.init(...)``).
        delete_message: Loafer 2.x's choice: True settles the message with ACCEPT (it is
            deleted), False (the default) with RETRY.
        outcome: any :class:`~loafer_core.outcome.Outcome` instead (``RETRY(30)``,
            ``REJECT("reported")``, ...); overrides ``delete_message``.
        message_limit: characters of each string or bytes of the raw message sent as the
            event's extra ``message``.
    """
    if not isinstance(delete_message, bool):
        raise ConfigurationError(
            f"sentry_handler(delete_message=...): expected True or False, got "
            f"{type(delete_message).__name__}"
        )
    if outcome is not None and not isinstance(outcome, Outcome):
        raise ConfigurationError(
            f"sentry_handler(outcome=...): expected an Outcome, got {type(outcome).__name__}"
        )
    if isinstance(message_limit, bool) or not isinstance(message_limit, int) or message_limit < 1:
        raise ConfigurationError(
            f"sentry_handler(message_limit=...): expected an int >= 1, got {message_limit!r}"
        )
    if sdk_or_hub is None:
        sdk_or_hub = _sentry_sdk()
    elif not callable(getattr(sdk_or_hub, "capture_exception", None)):
        raise ConfigurationError(
            "sentry_handler(sdk_or_hub): expected the sentry_sdk module (or a Scope or Hub) "
            f"with capture_exception, got {type(sdk_or_hub).__name__} (a raven Client, as "
            "Loafer 1.x took, is not supported: use sentry-sdk)"
        )
    if outcome is None:
        outcome = ACCEPT if delete_message else RETRY()
    return SentryErrorHandler(sdk_or_hub, outcome, message_limit)


def _sentry_sdk() -> SentryCapture:
    try:
        import sentry_sdk
    except ImportError as exc:
        raise ConfigurationError(
            "sentry_handler needs sentry-sdk: pip install 'loafer-core[sentry]'"
        ) from exc
    return sentry_sdk


def bounded(value: Any, limit: int = MESSAGE_LIMIT, depth: int = 0) -> Any:
    """``value`` with each string cut to ``limit`` characters and bytes decoded (UTF-8,
    undecodable bytes replaced) and cut to ``limit`` bytes; mappings and lists are
    walked to a depth of 5; other objects are sent as their cut ``repr()``."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _cut(value, len(value), limit, "characters")
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return _cut(raw[:limit].decode("utf-8", "replace"), len(raw), limit, "bytes")
    if depth < _DEPTH:
        if isinstance(value, Mapping):
            return {
                _cut(key, len(key), limit, "characters"): bounded(v, limit, depth + 1)
                for key, v in ((k if isinstance(k, str) else repr(k), v) for k, v in value.items())
            }
        if isinstance(value, list | tuple):
            return [bounded(v, limit, depth + 1) for v in value]
    text = repr(value)
    return _cut(text, len(text), limit, "characters")


def _cut(text: str, size: int, limit: int, unit: str) -> str:
    if size <= limit:
        return text
    return f"{text[:limit]}... ({size - limit} more {unit})"
