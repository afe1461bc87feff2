"""Routes: a provider (where messages come from) tied to a handler (the user's code).

A route turns one delivery into one :class:`~loafer_core.outcome.Outcome`:

1. with ``max_attempts`` set, a delivery past the limit is REJECTED before anything runs;
2. the translator turns the raw message into content and metadata (empty content is an
   error);
3. the handler runs (bounded by ``handler_timeout``); its result maps to an outcome:
   ``True``/``None`` -> ACCEPT, ``False`` -> RETRY, an ``Outcome`` -> that; raising
   ``DeleteMessage``/``RejectMessage``/``RetryMessage`` -> ACCEPT/REJECT/RETRY (these
   signals are ``BaseException`` subclasses, so the handler's own ``except Exception``
   does not swallow them; raised by a sync handler they come back from its thread, and
   raised by an error handler they choose its outcome too);
4. any other exception, in the translator or the handler, goes to the error handler:
   ``True`` -> ACCEPT, ``False``/``None`` -> RETRY, an ``Outcome`` -> that. The default
   error handler logs the traceback with the route and message id and returns RETRY.
   A ``BaseException`` that is neither an ``Exception`` nor a signal (``GeneratorExit``, a
   custom one) is an error like any other; ``KeyboardInterrupt`` and ``SystemExit``
   propagate: they ask the service to stop (the dispatcher RELEASES the message and the
   manager drains).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from loafer_core._strings import refuse_string
from loafer_core.errors import (
    ConfigurationError,
    InvalidMessage,
    MessageSignal,
    TranslationError,
)
from loafer_core.forward import Targets, is_publish
from loafer_core.handler import (
    HandlerOverrun,
    InThreads,
    adapt_error_handler,
    adapt_handler,
    needs_instance,
    settle_result,
)
from loafer_core.handler import (
    really_cancelled as _really_cancelled,
)
from loafer_core.middleware import Middleware, check_middleware
from loafer_core.outcome import ACCEPT, REJECT, RETRY, Outcome, OutcomeKind
from loafer_core.policy import DEFAULT_RETRY, RetryPolicy
from loafer_core.provider import Capabilities, Delivery, Provider, Support
from loafer_core.throttle import LogThrottle
from loafer_core.translator import PassThroughTranslator, Translator
from loafer_core.typed import content_converter

__all__ = ["Route", "message_fields", "outcome_from_result", "split_provider_options"]

logger = logging.getLogger("loafer_core.route")

_UNSET: Any = object()


def message_fields(
    route: str, delivery: Delivery, outcome: Outcome | None = None
) -> dict[str, Any]:
    """The structured fields (``extra=``) of a log line about one message: ``route``,
    ``message_id``, ``attempt`` and, when known, ``outcome`` (its kind's name)."""
    return {
        "route": route,
        "message_id": delivery.message_id,
        "attempt": delivery.attempt,
        "outcome": outcome.kind.name if outcome is not None else None,
    }


def outcome_from_result(result: Any) -> Outcome:
    """Map a handler's (or error handler's) return value to an outcome.

    ``None`` and ``True`` -> ACCEPT, ``False`` -> RETRY, an ``Outcome`` -> itself; any other
    value by its truth (Loafer 2.x's rule).
    """
    if result is None or result is True:
        return ACCEPT
    if result is False:
        return RETRY()
    if isinstance(result, Outcome):
        return result
    return ACCEPT if result else RETRY()


def _error_outcome(result: Any) -> Outcome:
    """An error handler's value: ``True`` -> ACCEPT, ``False``/``None`` -> RETRY."""
    if result is None:
        return RETRY()
    return outcome_from_result(result)


class Route:
    """A provider tied to a handler, with its translator, error handler and limits.

    Arguments:
        provider: where deliveries come from (a :class:`~loafer_core.provider.Provider`).
        handler: the user's code (see :mod:`loafer_core.handler` for the shapes accepted).
        name: for logs; defaults to the provider's description.
        translator: raw message -> ``{'content', 'metadata'}``; defaults to the provider's
            ``default_translator`` (raw passes through if it has none); ``None`` disables it.
        message_translator: Loafer 2.x's name for ``translator`` (give one or the other).
        error_handler: ``(exc_type, exc, message)``, sync or async.
        max_concurrency: deliveries fetched and not yet settled, at most (>= 1).
        handler_timeout: seconds; an overrunning handler is cancelled and RETRIED.
        max_attempts: deliveries past this attempt number are REJECTED before the handler
            runs (needs a provider that counts attempts).
        retry: a :class:`~loafer_core.policy.RetryPolicy` giving plain RETRYs a delay
            (needs a provider with delayed retry). By default
            :data:`~loafer_core.policy.DEFAULT_RETRY` (1 s doubling to a minute) where the
            provider can delay retries and its plain RETRY would come back at once;
            ``None`` for no delay.
        middleware: a list of middlewares wrapped around every delivery of this route
            (see :mod:`loafer_core.middleware`), inside the manager's.
        publish_to: a publisher, or ``{name: publisher}``, the handler may publish to
            while handling a message (it returns ``Publish(...)`` values or calls
            ``loafer_core.forward.publish``); the message is ACCEPTED only once every
            publish made for it was confirmed, else RETRIED (see
            :mod:`loafer_core.forward`). The manager opens and closes these publishers.
    """

    def __init__(
        self,
        provider: Provider,
        handler: Any = None,
        *,
        name: str | None = None,
        translator: Translator | None = _UNSET,
        message_translator: Translator | None = _UNSET,
        error_handler: Any = None,
        max_concurrency: int = 10,
        handler_timeout: float | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = _UNSET,
        middleware: Sequence[Middleware] | None = None,
        publish_to: Any = None,
    ) -> None:
        refuse_string("Route(provider=...)", provider, "a provider instance", call="(...)")
        if isinstance(provider, type):
            raise ConfigurationError(
                f"Route(provider=...): got the class {provider.__name__}; pass an instance "
                f"({provider.__name__}(...))"
            )
        if not isinstance(provider, Provider):
            raise ConfigurationError(
                "Route(provider=...): expected a provider with capabilities, start(), "
                f"fetch(), settle() and close(), got {type(provider).__name__}"
            )
        self.provider = provider
        self._call, self._stop, handler_name = adapt_handler(handler)
        self.handler = handler
        # a typed handler (first parameter a model, dataclass, TypedDict, Struct): its
        # content is validated into that type (see loafer_core.typed)
        self._convert = _converter_of(handler)

        if translator is not _UNSET and message_translator is not _UNSET:
            raise ConfigurationError(
                "Route: give translator=... or message_translator=... (the same thing), not both"
            )
        chosen = translator if translator is not _UNSET else message_translator
        if chosen is _UNSET:
            chosen = getattr(provider, "default_translator", None) or PassThroughTranslator()
        refuse_string(
            f"Route({'translator' if translator is not _UNSET else 'message_translator'}=...)",
            chosen,
            "a translator object (such as TextTranslator()) or None",
            call="()",
        )
        if isinstance(chosen, type) and needs_instance(chosen, "translate"):
            raise ConfigurationError(
                f"Route(translator=...): got the class {chosen.__name__}; pass an instance "
                f"({chosen.__name__}())"
            )
        if chosen is not None and not callable(getattr(chosen, "translate", None)):
            raise ConfigurationError(
                "Route(translator=...): expected an object with translate(raw) or None, "
                f"got {type(chosen).__name__}"
            )
        self.translator: Translator | None = chosen

        self._error_call = adapt_error_handler(error_handler)
        self.error_handler = error_handler

        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise ConfigurationError(
                f"Route(max_concurrency=...): expected an int >= 1, got {max_concurrency!r}"
            )
        if max_concurrency < 1:
            raise ConfigurationError(
                f"Route(max_concurrency=...): must be >= 1, got {max_concurrency}"
            )
        self.max_concurrency = max_concurrency
        for call in (self._call, self._error_call):
            if isinstance(call, InThreads):  # a sync handler: as many threads as slots
                call.max_workers = max_concurrency

        if handler_timeout is not None and (
            isinstance(handler_timeout, bool)
            or not isinstance(handler_timeout, int | float)
            or not math.isfinite(handler_timeout)
            or handler_timeout <= 0
        ):
            raise ConfigurationError(
                f"Route(handler_timeout=...): expected seconds > 0 or None, got {handler_timeout!r}"
            )
        self.handler_timeout = handler_timeout

        if max_attempts is not None and (
            isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1
        ):
            raise ConfigurationError(
                f"Route(max_attempts=...): expected an int >= 1 or None, got {max_attempts!r}"
            )
        self.max_attempts = max_attempts

        self.middleware = check_middleware("Route", middleware)
        #: the ``publish_to`` targets (None: the handler publishes nothing through the route)
        self.publish_to = None if publish_to is None else Targets("Route", publish_to)
        if self.publish_to is not None:  # every delivery runs in a forwarding context
            self.process = functools.partial(  # type: ignore[method-assign]
                self.publish_to.process, self, self.process
            )
        self._default_retry = retry is _UNSET
        if self._default_retry:
            retry = DEFAULT_RETRY
        refuse_string("Route(retry=...)", retry, "a RetryPolicy(...) or None", call="(...)")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(
                f"Route(retry=...): expected a RetryPolicy or None, got {type(retry).__name__}"
            )
        self.retry: RetryPolicy | None = retry
        # what applies: the default only once check_capabilities() knows the provider
        self._retry = None if self._default_retry else retry
        # errors of this route's messages: logged at a bounded rate, repeats counted
        self._errors = LogThrottle()
        #: errors of this route's messages (translator, handler, error handler) so far
        self.message_errors = 0
        #: the last of them, as ``"Type: text"``
        self.last_message_error: str | None = None

        if name is not None and not isinstance(name, str):
            raise ConfigurationError(f"Route(name=...): expected a str, got {type(name).__name__}")
        self.name = name or f"{_describe(provider)} -> {handler_name}"
        self._stopped = False
        #: set when a Manager first runs this route (a route runs once: its provider is
        #: closed after)
        self.has_run = False
        # the provider's, once check_capabilities() knows them (for a RETRY's delay)
        self._capabilities: Capabilities | None = None
        self._warned: set[str] = set()  # cases warned about once (see _warn_once)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def on(self, key: Any = _UNSET, *, when: Any = None) -> Any:
        """Decorator registering one more handler on a route whose handler is a
        :class:`~loafer_core.dispatch.Handlers` (see :mod:`loafer_core.dispatch`)."""
        from loafer_core.dispatch import Handlers

        if not isinstance(self.handler, Handlers):
            raise ConfigurationError(
                f"route {self.name!r}: @route.on(...) needs a route built with "
                "Route(provider, Handlers(discriminator=...))"
            )
        if key is _UNSET:
            return self.handler.on(when=when)
        return self.handler.on(key, when=when)

    @staticmethod
    def _adapt_one(handler: Any) -> Any:
        """One handler as an async ``(content, metadata) -> result`` with its content
        typed (for :class:`~loafer_core.dispatch.Handlers`)."""
        call, _stop, _name = adapt_handler(handler)
        convert = _converter_of(handler)

        async def run(content: Any, metadata: Mapping[str, Any]) -> Any:
            if convert is not None:
                content = convert(content)
            return await settle_result(await call(content, metadata))

        return run

    @property
    def stuck_handlers(self) -> int:
        """Sync handler calls that overran ``handler_timeout`` and have not returned yet:
        each holds one of the route's ``max_concurrency`` threads, so the route fetches
        that many fewer messages (none once all are stuck)."""
        call = self._call
        return call.stuck if isinstance(call, InThreads) else 0

    def watch_stuck(self, callback: Any) -> None:
        """Have ``callback(stuck)`` called on the event loop whenever
        :attr:`stuck_handlers` changes (the dispatcher adjusts its capacity)."""
        if isinstance(self._call, InThreads):
            self._call.on_stuck = callback

    # -- start-up -------------------------------------------------------------------------

    def check_capabilities(self, capabilities: Capabilities) -> None:
        """Fail with ConfigurationError if this route needs what the provider cannot do
        (and remember what it can do with a handler's RETRY delay)."""
        self._capabilities = capabilities
        if self.max_attempts is not None and capabilities.attempt_count is Support.NONE:
            raise ConfigurationError(
                f"route {self.name!r}: max_attempts={self.max_attempts} needs a provider that "
                f"counts delivery attempts, and {_describe(self.provider)} does not; remove "
                "max_attempts or use the broker's own redrive/dead-letter limit"
            )
        if self._default_retry:
            self._retry = _default_retry_for(capabilities)
            if self._retry is None and not capabilities.retry_waits:
                logger.warning(
                    "route %r: %s cannot delay retries: a message that fails is redelivered "
                    "at once, again and again; set max_attempts, or dead-letter it from an "
                    "error handler",
                    self.name,
                    _describe(self.provider),
                )
        elif self.retry is not None:
            if capabilities.delayed_retry is Support.NONE and self.retry.maximum > 0:
                raise ConfigurationError(
                    f"route {self.name!r}: retry={self.retry} needs delayed retries, and "
                    f"{_describe(self.provider)} has none; remove retry= or enable delayed "
                    "retries on the provider"
                )
            limit = capabilities.max_retry_delay
            if limit is not None and self.retry.maximum > limit:
                raise ConfigurationError(
                    f"route {self.name!r}: retry maximum {self.retry.maximum}s exceeds the "
                    f"provider's longest retry delay ({limit}s)"
                )

    # -- one delivery -----------------------------------------------------------------------

    async def process(self, delivery: Delivery) -> Outcome:
        """Run one delivery through translator, handler and error handler; return its outcome."""
        attempt = delivery.attempt
        limit = self.max_attempts
        if limit is not None and attempt is not None and attempt > limit:
            rejected = REJECT(f"max_attempts ({limit}) exceeded: attempt {attempt}")
            logger.warning(
                "route %r: message %s rejected before handling: attempt %d exceeds max_attempts=%d",
                self.name,
                delivery.message_id,
                attempt,
                limit,
                extra=message_fields(self.name, delivery, rejected),
            )
            return rejected
        try:
            translator = self.translator
            if translator is None:
                content: Any = delivery.raw
                metadata: Mapping[str, Any] = delivery.metadata
            else:
                content, metadata = self._translate(translator, delivery)
            if self._convert is not None:
                content = self._convert(content)
            if self.handler_timeout is None:  # no asyncio.timeout: it is costly per message
                result = await self._call(content, metadata)
                if not (result is True or result is None or isinstance(result, bool | Outcome)):
                    result = await settle_result(result)
            else:
                result = await self._call_with_deadline(content, metadata, delivery)
            if result is not True and result is not None:
                if self.publish_to is not None:  # Publish(...) results: publish, confirm
                    result = await self.publish_to.returned(result)
                elif is_publish(result):
                    raise ConfigurationError(
                        f"route {self.name!r}: the handler returned Publish(...) but the "
                        "route has no publish_to=...; give it the publisher(s)"
                    )
        except MessageSignal as signal:
            try:
                outcome = signal.outcome()
            except Exception as exc:  # a signal subclass that cannot say its outcome
                outcome = await self._on_error(exc, delivery)
        except asyncio.CancelledError as exc:
            if _really_cancelled():
                raise
            # the handler awaited something cancelled by someone else: it failed
            outcome = await self._on_error(exc, delivery)
        except Exception as exc:
            outcome = await self._on_error(exc, delivery)
        except (KeyboardInterrupt, SystemExit):
            raise  # a request to stop the service: the dispatcher releases and drains
        except BaseException as exc:  # GeneratorExit, a custom BaseException: an error
            grouped = _only_signals(exc)
            if grouped is not None:  # a TaskGroup's group of a child's signal(s)
                try:
                    outcome = grouped.outcome()
                except Exception as failure:
                    outcome = await self._on_error(failure, delivery)
            else:
                outcome = await self._on_error(exc, delivery)
        else:
            if result is True or result is None:
                return ACCEPT
            outcome = outcome_from_result(result)
            if outcome.kind is OutcomeKind.RETRY and result is not False:
                self._warn_once(
                    "falsy",
                    "route %r: the handler returned %r, a falsy value: the message is "
                    "RETRIED (Loafer's rule: only True or None accept it; return True, "
                    "None or an Outcome to say what you mean)",
                    self.name,
                    result,
                )
        if outcome.kind is OutcomeKind.RETRY:
            return self._finish(outcome, delivery)
        return outcome

    async def _call_with_deadline(
        self, content: Any, metadata: Mapping[str, Any], delivery: Delivery
    ) -> Any:
        """The handler under ``handler_timeout``: an overrun gives ``False`` (RETRY).

        A sync handler's deadline runs from when its thread starts the call (waiting for
        a thread is not the handler's fault); its thread, still running, counts as stuck
        until the call returns (see :attr:`stuck_handlers`).
        """
        call = self._call
        if isinstance(call, InThreads):
            assert self.handler_timeout is not None
            try:
                result = await call.call_with_deadline(self.handler_timeout, content, metadata)
            except HandlerOverrun:
                self._log_error(
                    None,
                    delivery,
                    "route %r: handler timed out after %ss on message %s; it will be retried "
                    "(its thread is still in the call: %d of the route's %d are stuck)",
                    self.name,
                    self.handler_timeout,
                    delivery.message_id,
                    call.stuck,
                    self.max_concurrency,
                )
                return False
            return await settle_result(result)
        deadline = asyncio.timeout(self.handler_timeout)
        try:
            async with deadline:
                return await settle_result(await self._call(content, metadata))
        except TimeoutError:
            if not deadline.expired():
                raise  # the handler's own TimeoutError: an error like any other
            self._log_error(
                None,
                delivery,
                "route %r: handler timed out after %ss on message %s; it will be retried",
                self.name,
                self.handler_timeout,
                delivery.message_id,
            )
            return False

    @staticmethod
    def _translate(translator: Translator, delivery: Delivery) -> tuple[Any, Mapping[str, Any]]:
        translated = translator.translate(delivery.raw)
        content = translated["content"]
        try:
            empty = not content  # Loafer's test: None, "", b"", {}, [], 0 and False
        except Exception:  # content without a truth value (an array, say) is content
            empty = False
        if empty:
            raise TranslationError(
                f"translator {type(translator).__name__} produced empty (falsy) content: "
                f"{content!r}"
            )
        extra = translated.get("metadata")
        metadata = {**delivery.metadata, **extra} if extra else delivery.metadata
        return content, metadata

    def _finish(self, outcome: Outcome, delivery: Delivery) -> Outcome:
        """Apply max_attempts and the retry policy to a RETRY."""
        limit = self.max_attempts
        if limit is not None and delivery.attempt is not None and delivery.attempt >= limit:
            rejected = REJECT(f"max_attempts ({limit}) reached")
            held = self._errors.admit(("last attempt",))  # at the errors' bounded rate
            if held is not None:
                logger.warning(
                    "route %r: message %s failed its last attempt (%d of max_attempts=%d): "
                    "rejected%s",
                    self.name,
                    delivery.message_id,
                    delivery.attempt,
                    limit,
                    f" ({held} more not logged since the last time)" if held else "",
                    extra=message_fields(self.name, delivery, rejected),
                )
            return rejected
        if outcome.delay is None and self._retry is not None:
            return RETRY(self._retry.delay(delivery.attempt))
        if outcome.delay and self._capabilities is not None:
            return self._deliverable_delay(outcome, outcome.delay, self._capabilities)
        return outcome

    def retry_outcome(self, delivery: Delivery, delay: float | None = None) -> Outcome:
        """The RETRY of ``delivery`` as this route gives a failed one: with its retry
        policy's delay, or a REJECT once ``max_attempts`` is reached. With ``delay``: a
        delivery put off rather than failed (a busy idempotency key), a RETRY after that
        many seconds, as the provider can delay it, never a REJECT."""
        if delay is None:
            return self._finish(RETRY(), delivery)
        if self._capabilities is not None:
            return self._deliverable_delay(RETRY(delay), delay, self._capabilities)
        return RETRY(delay)

    def failed(self, exc: BaseException, delivery: Delivery, message: str, *args: Any) -> Outcome:
        """An error of ``delivery`` met outside the handler (by a middleware, or a
        forwarded publish): counted in :attr:`message_errors`, logged (``message % args``,
        with the traceback of ``exc``) at the route's bounded rate, and answered with
        :meth:`retry_outcome`."""
        self._count_error(exc)
        self._log_error(exc, delivery, message, *args)
        return self._finish(RETRY(), delivery)

    def _deliverable_delay(
        self, outcome: Outcome, delay: float, capabilities: Capabilities
    ) -> Outcome:
        """A RETRY delay the provider cannot honour (none at all, or longer than it can):
        dropped or shortened to what it can, with a warning (once per route and case)."""
        if capabilities.delayed_retry is Support.NONE:
            self._warn_once(
                "no delay",
                "route %r: %s has no delayed retries: a RETRY(delay=%ss) from the handler "
                "is a plain RETRY (redelivered when the broker redelivers)",
                self.name,
                _describe(self.provider),
                delay,
            )
            return RETRY()
        longest = capabilities.max_retry_delay
        if longest is not None and delay > longest:
            self._warn_once(
                "long delay",
                "route %r: %s delays a retry by at most its limit: RETRY(delay=%ss) is "
                f"shortened to {longest}s",
                self.name,
                _describe(self.provider),
                delay,
            )
            return RETRY(longest)
        return outcome

    def _warn_once(self, case: str, message: str, *args: Any) -> None:
        """Log a warning the first time ``case`` happens on this route only."""
        if case not in self._warned:
            self._warned.add(case)
            logger.warning(message, *args)

    def _log_error(
        self, exc: BaseException | None, delivery: Delivery, message: str, *args: Any
    ) -> None:
        """Log an error of a message (with the traceback of ``exc``) at a bounded rate: the
        same error (type and text, or the same line without one) at most once per 30 s,
        with the count of those held back meanwhile. Its outcome is RETRY."""
        key = (message,) if exc is None else (message, type(exc), _text(exc)[:200])
        held = self._errors.admit(key)
        if held is None:
            return
        if held:
            message += " (%d more like it not logged since the last time)"
            args = (*args, held)
        logger.error(
            message, *args, exc_info=exc, extra=message_fields(self.name, delivery, RETRY())
        )

    def _log_invalid(self, exc: BaseException, delivery: Delivery, rejected: Outcome) -> None:
        """An invalid message rejected by default: a warning, at the errors' bounded rate."""
        held = self._errors.admit(("invalid", type(exc), _text(exc)[:200]))
        if held is None:
            return
        logger.warning(
            "route %r: message %s rejected: %s%s",
            self.name,
            delivery.message_id,
            exc,
            f" ({held} more like it not logged since the last time)" if held else "",
            extra=message_fields(self.name, delivery, rejected),
        )

    def _count_error(self, exc: BaseException) -> None:
        self.message_errors += 1
        self.last_message_error = f"{type(exc).__name__}: {_text(exc)[:500]}"

    async def _on_error(self, exc: BaseException, delivery: Delivery) -> Outcome:
        delivery.error = exc
        self._count_error(exc)
        if self._error_call is None:
            if isinstance(exc, InvalidMessage):  # retrying cannot make it valid
                rejected = REJECT(str(exc))
                self._log_invalid(exc, delivery, rejected)
                return rejected
            self._log_error(
                exc,
                delivery,
                "route %r: error handling message %s (attempt %s); it will be retried",
                self.name,
                delivery.message_id,
                delivery.attempt,
            )
            return RETRY()
        try:
            try:
                result = await self._error_call(type(exc), exc, delivery.raw)
                result = await settle_result(result)
            except MessageSignal as signal:
                return signal.outcome()
            except asyncio.CancelledError:
                if _really_cancelled():
                    raise
                raise RuntimeError("the error handler raised CancelledError")  # noqa: B904
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as failure:
            self._count_error(failure)
            self._log_error(
                failure,
                delivery,
                "route %r: the error handler failed on message %s; it will be retried",
                self.name,
                delivery.message_id,
            )
            return RETRY()
        return _error_outcome(result)

    # -- shutdown ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Call the handler's ``stop()`` once (errors are logged, never raised); let the
        threads of a sync handler end (one still running is not waited for)."""
        for call in (self._call, self._error_call):
            if isinstance(call, InThreads):
                call.close()
        if self._stopped:
            return
        self._stopped = True
        held = self._errors.held()
        if held:
            logger.warning(
                "route %r: %d repeated error log lines were held back (rate limit)",
                self.name,
                held,
            )
        if self._stop is None:
            return
        try:
            self._stop()
        except Exception:
            logger.exception("route %r: handler stop() failed", self.name)


def _only_signals(exc: BaseException) -> MessageSignal | None:
    """The first signal of a ``BaseExceptionGroup`` holding nothing but message signals
    (an ``asyncio.TaskGroup`` wraps a child task's signal so), else None."""
    if not isinstance(exc, BaseExceptionGroup):
        return None
    signals, rest = exc.split(MessageSignal)
    if signals is None or rest is not None:
        return None
    first: BaseException = signals
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first if isinstance(first, MessageSignal) else None


def _text(exc: BaseException) -> str:
    """``str(exc)``, or a stand-in when the exception's ``__str__`` itself fails."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"


def _converter_of(handler: Any) -> Any:
    """The typed-content converter of a handler (its ``handle`` for an object), or None."""
    handle = getattr(handler, "handle", None)
    return content_converter(
        handle if callable(handle) and not inspect.isfunction(handler) else handler
    )


def _default_retry_for(capabilities: Capabilities) -> RetryPolicy | None:
    """DEFAULT_RETRY as the provider can honour it: none where it cannot delay a retry or
    its plain RETRY already waits; capped at its longest delay."""
    if capabilities.delayed_retry is Support.NONE or capabilities.retry_waits:
        return None
    limit = capabilities.max_retry_delay
    if limit is not None and DEFAULT_RETRY.maximum > limit:
        return RetryPolicy(min(DEFAULT_RETRY.initial, limit), DEFAULT_RETRY.factor, limit)
    return DEFAULT_RETRY


def split_provider_options(
    owner: str,
    provider_cls: type[Any],
    options: Mapping[str, Any],
    provider_options: Mapping[str, Any] | None = None,
    *,
    exclude: Iterable[str] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a plugin route's keywords into ``(provider_kwargs, route_kwargs)``.

    For routes such as ``RabbitRoute(queue, url=..., handler=..., max_concurrency=...)``:
    keywords ``provider_cls.__init__`` takes (less ``exclude``, the ones the route fills
    itself) go to the provider, the rest to :class:`Route`. ``provider_options`` may give
    provider keywords as a mapping; an unknown one, or one given both ways, is a
    ``ConfigurationError`` naming ``owner``.
    """
    accepted = frozenset(inspect.signature(provider_cls.__init__).parameters) - {
        "self",
        *exclude,
    }
    provider_kwargs = dict(provider_options or {})
    unknown = set(provider_kwargs) - accepted
    if unknown:
        raise ConfigurationError(
            f"{owner}(provider_options=...): unknown option(s) {sorted(unknown)}; "
            f"{provider_cls.__name__} takes {sorted(accepted)}"
        )
    route_kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key in accepted:
            if key in provider_kwargs:
                raise ConfigurationError(
                    f"{owner}: {key!r} given both directly and in provider_options"
                )
            provider_kwargs[key] = value
        else:
            route_kwargs[key] = value
    return provider_kwargs, route_kwargs


def _describe(provider: Any) -> str:
    describe = getattr(provider, "describe", None)
    if callable(describe):
        try:
            return str(describe())
        except Exception:
            pass
    queue = getattr(provider, "queue", None) or getattr(provider, "queue_name", None)
    return f"{type(provider).__name__}({queue!r})" if queue else type(provider).__name__
