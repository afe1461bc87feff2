"""The one exception tree of loafer-core.

::

    Exception
    └── LoaferError                 base of every error loafer raises
        ├── ConfigurationError      wrong set-up; fatal, raised at construction or start-up
        ├── ProviderError           a broker/transport failure; the dispatcher logs it and
        │   │                       retries with backoff (plugins translate their library's
        │   │                       errors into this at the edge: loafer_core.kit's
        │   │                       map_exceptions)
        │   └── PublishRefused      the broker refused a published message (nack,
        │                           unroutable, rejected): retrying may not help
        └── TranslationError        a translator could not produce content (also a ValueError,
            │                       as Loafer 2.x raised ValueError); goes to the error handler
            └── InvalidMessage      content is not the type a typed handler declares; without
                                    an error handler the message is REJECTED with why

    BaseException (not an Exception: ``except Exception`` lets these through)
    └── MessageSignal               raised by a handler (or an error handler, or a
        │                           middleware) to choose the outcome of its delivery
        ├── DeleteMessage           -> ACCEPT (Loafer's meaning: remove the message)
        ├── RejectMessage(reason)   -> REJECT (poison: dead-letter, never redeliver)
        └── RetryMessage(delay)     -> RETRY (a failed attempt, redelivered later)

The message signals are ``BaseException`` subclasses, as olist-loafer 7.0's
``DeleteMessage`` is: a ``raise DeleteMessage()`` inside the handler's own
``try: ... except Exception:`` still reaches the route and deletes the message instead of
being swallowed (and turned into a silent RETRY). The route catches them wherever the
user's code runs: an async handler, a sync handler on the route's threads (the signal is
carried back to the event loop), a typed handler's validation, an error handler and a
middleware; they never end a task or leave the route. Catch them explicitly with
``except MessageSignal`` (not ``except LoaferError``: they are not errors).

``LoaferException`` is kept as an alias of :class:`LoaferError` for code written for Loafer 2.x.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loafer_core.outcome import Outcome

__all__ = [
    "ConfigurationError",
    "DeleteMessage",
    "InvalidMessage",
    "LoaferError",
    "LoaferException",
    "MessageSignal",
    "ProviderError",
    "PublishRefused",
    "RejectMessage",
    "RetryMessage",
    "TranslationError",
]


class LoaferError(Exception):
    """Base class of every exception loafer-core and its plugins raise."""


LoaferException = LoaferError
"""Loafer 2.x's name for :class:`LoaferError`, kept for migrating code."""


class ConfigurationError(LoaferError):
    """The set-up is wrong: bad arguments, a missing queue, refused credentials.

    Raised at construction or at start-up, with a message that says what to fix.
    When a provider raises it while a manager runs, the manager stops every route and
    the process exits non-zero.
    """


class ProviderError(LoaferError):
    """A broker or transport failure (connection lost, a call refused).

    Not fatal: the dispatcher logs it and retries with exponential backoff and jitter.
    """


class PublishRefused(ProviderError):
    """The broker answered a publish by refusing the message: a negative confirm, an
    unroutable message returned, a ``rejected`` outcome, no stream for the subject.

    Every bundled publisher raises it (``loafer_rabbit.PublishRejected``,
    ``loafer_nats.PublishRejected`` and ``loafer_amqp.PublishRefused`` are subclasses,
    kept for code that catches them); a plugin's own publisher should too.
    """


class TranslationError(LoaferError, ValueError):
    """A translator could not turn a raw message into content (e.g. empty content)."""


class InvalidMessage(TranslationError):
    """The content does not validate as the type the handler's first parameter declares
    (a pydantic model, a dataclass, a TypedDict, a msgspec Struct).

    Retrying cannot help: without an error handler the message is REJECTED with this
    error's text as the reason; an error handler decides otherwise if it wants.
    """


class MessageSignal(BaseException):
    """Raised by a handler to choose its delivery's outcome explicitly.

    A ``BaseException``, not an ``Exception`` (as olist-loafer 7.0's ``DeleteMessage``):
    ``except Exception`` in the handler does not swallow it. The route turns it into
    :meth:`outcome`.
    """

    def outcome(self) -> Outcome:
        """The outcome this signal stands for."""
        raise NotImplementedError


class DeleteMessage(MessageSignal):
    """Acknowledge the message (ACCEPT): it is removed from the broker."""

    def outcome(self) -> Outcome:
        from loafer_core.outcome import ACCEPT

        return ACCEPT


class RejectMessage(MessageSignal):
    """The message is poison (REJECT): never redelivered, dead-lettered where possible."""

    def __init__(self, reason: str = "rejected by handler") -> None:
        super().__init__(reason)
        self.reason = reason

    def outcome(self) -> Outcome:
        from loafer_core.outcome import REJECT

        return REJECT(self.reason)


class RetryMessage(MessageSignal):
    """A failed attempt (RETRY): deliver again later, after ``delay`` seconds if given."""

    def __init__(self, delay: float | None = None) -> None:
        from loafer_core.outcome import RETRY

        # a bad delay fails here, in the handler: its ValueError reaches the error handler
        self._outcome = RETRY(delay)
        super().__init__(f"retry requested (delay={delay})")
        self.delay = delay

    def outcome(self) -> Outcome:
        return self._outcome
