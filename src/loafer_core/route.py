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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from loafer_core._attempts import Attempts
from loafer_core._checks import seconds, whole
from loafer_core._deadline import Deadline
from loafer_core._error_step import ErrorStep, outcome_from_result
from loafer_core._handler import (
    InThreads,
    adapt_error_handler,
    adapt_handler,
    converter_of,
    needs_instance,
    settle_result,
)
from loafer_core._handler import (
    really_cancelled as _really_cancelled,
)
from loafer_core._message_errors import MessageErrors, message_fields
from loafer_core._strings import checked_instance, refuse_string
from loafer_core.errors import ConfigurationError, MessageSignal, TranslationError
from loafer_core.forward import Targets, is_publish
from loafer_core.handlers import Handlers
from loafer_core.middleware import Middleware, check_middleware
from loafer_core.outcome import ACCEPT, Outcome, OutcomeKind
from loafer_core.policy import DEFAULT_RETRY, RetryPolicy
from loafer_core.provider import Capabilities, Delivery, Provider
from loafer_core.settings import Settings, flat_names
from loafer_core.translator import PassThroughTranslator, Translator

__all__ = [
    "Route",
    "message_fields",
    "outcome_from_result",
    "provider_option_names",
    "split_provider_options",
]

logger = logging.getLogger("loafer_core.route")

_UNSET: Any = object()
#: one delivery through a route's processing
Process = Callable[[Delivery], Awaitable[Outcome]]


class Route:
    """A provider tied to a handler, with its translator, error handler and limits.

    Arguments:
        provider: where deliveries come from (a :class:`~loafer_core.provider.Provider`).
        handler: the user's code: a function or coroutine function of ``(content,
            metadata)``, or an object with ``handle`` (and optionally ``stop``).
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
        self.provider = _checked_provider(provider)
        self._call, self._stop, handler_name = adapt_handler(handler)
        self.handler = handler
        # a typed handler (first parameter a model, dataclass, TypedDict, Struct): its
        # content is validated into that type (see loafer_core.typed)
        self._convert = converter_of(handler)
        self.translator: Translator | None = _chosen_translator(
            provider, translator, message_translator
        )
        self._error_call = adapt_error_handler(error_handler)
        self.error_handler = error_handler
        self.max_concurrency: int = whole("Route", "max_concurrency", max_concurrency, 1)
        batch_size = getattr(handler, "batch_size", None)
        if isinstance(batch_size, int) and batch_size > self.max_concurrency:
            raise ConfigurationError(
                f"Route: a batch handler of up to {batch_size} messages needs "
                f"max_concurrency >= {batch_size} (each message of a batch holds a slot; "
                f"got {self.max_concurrency}): raise max_concurrency or lower max_size"
            )
        for call in (self._call, self._error_call):
            if isinstance(call, InThreads):  # a sync handler: as many threads as slots
                call.max_workers = max_concurrency
        self.handler_timeout: float | None = seconds(
            "Route", "handler_timeout", handler_timeout, optional=True
        )
        self.max_attempts: int | None = whole(
            "Route", "max_attempts", max_attempts, 1, optional=True
        )
        self.middleware = check_middleware("Route", middleware)
        #: the ``publish_to`` targets (None: the handler publishes nothing through the route)
        self.publish_to = None if publish_to is None else Targets("Route", publish_to)
        default_retry = retry is _UNSET
        self.retry: RetryPolicy | None = _checked_retry(DEFAULT_RETRY if default_retry else retry)
        if name is not None and not isinstance(name, str):
            raise ConfigurationError(f"Route(name=...): expected a str, got {type(name).__name__}")
        name = name or f"{_describe(provider)} -> {handler_name}"
        # the jobs around the handler, each its own unit (composed here, once)
        self._errors = MessageErrors(name)
        self._attempts = Attempts(
            name,
            functools.partial(_describe, provider),
            self.max_attempts,
            self.retry,
            default_retry,
            self._errors,
        )
        self._on_error = ErrorStep(self._error_call, self._errors)
        self._deadline = (
            None
            if self.handler_timeout is None
            else Deadline(self._call, self.handler_timeout, self._errors, max_concurrency)
        )
        self._name = name
        self._stopped = False
        #: set when a Manager first runs this route (a route runs once: its provider is
        #: closed after)
        self.has_run = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @property
    def name(self) -> str:
        """The route's name, for logs, metrics and status (by default the provider's
        description and the handler's name)."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = self._errors.route = self._attempts.route = value

    @property
    def message_errors(self) -> int:
        """Errors of this route's messages (translator, handler, error handler,
        middleware, forwarded publish) so far."""
        return self._errors.count

    @property
    def last_message_error(self) -> str | None:
        """The last of :attr:`message_errors`, as ``"Type: text"``."""
        return self._errors.last

    def on(self, key: Any = _UNSET, *, when: Any = None) -> Any:
        """Decorator registering one more handler on a route whose handler is a
        :class:`~loafer_core.handlers.Handlers` (see :mod:`loafer_core.handlers`)."""
        if not isinstance(self.handler, Handlers):
            raise ConfigurationError(
                f"route {self.name!r}: @route.on(...) needs a route built with "
                "Route(provider, Handlers(discriminator=...))"
            )
        if key is _UNSET:
            return self.handler.on(when=when)
        return self.handler.on(key, when=when)

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
        self._attempts.check(capabilities)

    def pipeline(self) -> Process:
        """The route's processing of one delivery as the dispatcher runs it, composed
        once at start-up: :meth:`process`, inside the forwarding step when the route has
        ``publish_to`` targets (the message is ACCEPTED only once every publish made for
        it was confirmed). The dispatcher wraps this in the middlewares."""
        if self.publish_to is None:
            return self.process
        return functools.partial(self.publish_to.process, self, self.process)

    # -- one delivery -----------------------------------------------------------------------

    async def process(self, delivery: Delivery) -> Outcome:
        """Run one delivery through translator, handler and error handler; return its
        outcome. (The forwarding step is not in here: see :meth:`pipeline`.)"""
        if self.max_attempts is not None:
            rejected = self._attempts.gate(delivery)
            if rejected is not None:
                return rejected
        try:
            translator = self.translator
            if translator is None:
                content: Any = delivery.raw
                metadata: Mapping[str, Any] = delivery.metadata
            else:
                content, metadata = _translate(translator, delivery)
            if self._convert is not None:
                content = self._convert(content)
            if self._deadline is None:  # no asyncio.timeout: it is costly per message
                result = await self._call(content, metadata)
                if not (result is True or result is None or isinstance(result, bool | Outcome)):
                    result = await settle_result(result)
            else:
                result = await self._deadline(content, metadata, delivery)
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
                self._attempts.warn_once(
                    "falsy",
                    "route %r: the handler returned %r, a falsy value: the message is "
                    "RETRIED (Loafer's rule: only True or None accept it; return True, "
                    "None or an Outcome to say what you mean)",
                    self.name,
                    result,
                )
        if outcome.kind is OutcomeKind.RETRY:
            return self._attempts.finish(outcome, delivery)
        return outcome

    def retry_outcome(self, delivery: Delivery, delay: float | None = None) -> Outcome:
        """The RETRY of ``delivery`` as this route gives a failed one: with its retry
        policy's delay, or a REJECT once ``max_attempts`` is reached. With ``delay``: a
        delivery put off rather than failed (a busy idempotency key), a RETRY after that
        many seconds, as the provider can delay it, never a REJECT."""
        return self._attempts.retry_outcome(delivery, delay)

    def failed(self, exc: BaseException, delivery: Delivery, message: str, *args: Any) -> Outcome:
        """An error of ``delivery`` met outside the handler (by a middleware, or a
        forwarded publish): counted in :attr:`message_errors`, logged (``message % args``,
        with the traceback of ``exc``) at the route's bounded rate, and answered with
        :meth:`retry_outcome`."""
        self._errors.counted(exc)
        self._errors.log(exc, delivery, message, *args)
        return self._attempts.retry_outcome(delivery)

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
        self._errors.summarise()
        if self._stop is None:
            return
        try:
            self._stop()
        except Exception:
            logger.exception("route %r: handler stop() failed", self.name)


def _checked_provider(provider: Any) -> Provider:
    return checked_instance(  # type: ignore[no-any-return]
        "Route(provider=...)",
        provider,
        Provider,
        "a provider (an object with capabilities, start(), fetch(), settle() and close())",
    )


def _chosen_translator(provider: Any, translator: Any, message_translator: Any) -> Any:
    """The route's translator: the one given (by either name), else the provider's
    ``default_translator``, else a pass-through; ``None`` disables it."""
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
    return chosen


def _checked_retry(retry: Any) -> RetryPolicy | None:
    refuse_string("Route(retry=...)", retry, "a RetryPolicy(...) or None", call="(...)")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigurationError(
            f"Route(retry=...): expected a RetryPolicy or None, got {type(retry).__name__}"
        )
    return retry


def _translate(translator: Translator, delivery: Delivery) -> tuple[Any, Mapping[str, Any]]:
    translated = translator.translate(delivery.raw)
    content = translated["content"]
    try:
        empty = not content  # Loafer's test: None, "", b"", {}, [], 0 and False
    except Exception:  # content without a truth value (an array, say) is content
        empty = False
    if empty:
        raise TranslationError(
            f"translator {type(translator).__name__} produced empty (falsy) content: {content!r}"
        )
    extra = translated.get("metadata")
    metadata = {**delivery.metadata, **extra} if extra else delivery.metadata
    return content, metadata


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


def provider_option_names(provider_cls: type[Any]) -> frozenset[str]:
    """The keywords ``provider_cls`` takes: its settings' flat names when it has a
    ``settings_type`` (:mod:`loafer_core.settings`), else its ``__init__``'s parameters."""
    settings_type = getattr(provider_cls, "settings_type", None)
    if isinstance(settings_type, type) and issubclass(settings_type, Settings):
        return frozenset(flat_names(settings_type))
    return frozenset(inspect.signature(provider_cls.__init__).parameters) - {"self"}


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
    keywords ``provider_cls`` takes (:func:`provider_option_names`, less ``exclude``, the
    ones the route fills itself) go to the provider, the rest to :class:`Route`.
    ``provider_options`` may give provider keywords as a mapping; an unknown one, or one
    given both ways, is a ``ConfigurationError`` naming ``owner``.
    """
    accepted = provider_option_names(provider_cls) - set(exclude)
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
