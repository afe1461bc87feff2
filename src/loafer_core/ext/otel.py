"""OpenTelemetry tracing across brokers (extra ``otel``: ``opentelemetry-api``).

One line turns it on for a manager's routes, and for every publish their handlers make::

    from loafer_core.ext.otel import tracing

    manager = Manager(routes, middleware=[tracing()])  # the global TracerProvider

- **Consumer spans**: the middleware gives each delivery a span of kind ``CONSUMER``
  named ``process <queue>``, with the messaging semantic conventions' attributes
  (``messaging.system``, ``messaging.destination.name``, ``messaging.operation.type`` =
  ``process``, ``messaging.message.id``) and loafer's (``loafer.route``,
  ``loafer.attempt``, ``loafer.outcome``); an exception of the translator or handler
  (``delivery.error``) is recorded on it (``error.type``, an ``exception`` event, status
  ERROR). Its parent is the trace context the message carries (W3C ``traceparent``),
  extracted from the provider's headers: RabbitMQ headers, AMQP 1.0 application
  properties, SQS message attributes, NATS headers, Redis entry fields, or the SNS
  envelope's ``MessageAttributes``
  (through the route translator's optional ``message_headers(raw)``). A message without
  one starts a new trace.
- **Producer spans**: loafer's publishers (memory, RabbitMQ, AMQP 1.0, SQS, SNS, NATS,
  Redis) give
  each ``publish`` a span of kind ``PRODUCER`` named ``publish <destination>``
  (``messaging.operation.type`` = ``send``) and inject its context into the message's
  headers. Inside a handler the span is a child of the delivery's consumer span, made
  with the middleware's tracer; elsewhere with OpenTelemetry's global tracer provider.
  Nothing to turn on: publishers trace as soon as the process uses OpenTelemetry
  (``opentelemetry.trace`` imported); without it a publish costs one dictionary lookup.

The consumer span is a *child* of the producer span (not a span of its own linked to
it): loafer processes one message per span, the case where the semantic conventions
allow the creation context as parent, and a chain of publishes and deliveries across
brokers is then one trace, in order, in any tracing backend.

Nothing here is a module-level state of loafer's own: the tracer is the
:class:`Tracing` instance's; the only globals used are OpenTelemetry's (its tracer
provider and propagator), read when no other is given. Importing this module does not
import OpenTelemetry; :func:`tracing` does. See ``docs/tracing.md``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from loafer_core.errors import ConfigurationError
from loafer_core.outcome import Outcome, OutcomeKind
from loafer_core.provider import Delivery, Describable, Description

if TYPE_CHECKING:
    from loafer_core.context import RouteContext
    from loafer_core.middleware import Process

__all__ = ["SYSTEMS", "Tracing", "inject_each", "publish_span", "tracing"]

logger = logging.getLogger("loafer_core.ext.otel")

#: The context key under which the consumer span's context holds its :class:`Tracing`
#: (so that a publish in the handler uses the same tracer and propagator).
CONTEXT_KEY = "loafer_core.tracing"
#: The instrumentation scope's name.
SCOPE = "loafer_core"
#: Characters of an outcome's reason kept on a span (and of its error status).
REASON_LIMIT = 256
#: Characters of an exception's message kept on a span's ``exception`` event.
MESSAGE_LIMIT = 1024
#: Characters of an exception's stack trace kept on a span's ``exception`` event (its
#: innermost frames and its message: an error quoting a 1 MB body stays small).
STACKTRACE_LIMIT = 8192

#: ``messaging.system`` by the provider's package (another ``loafer_<name>`` package:
#: ``<name>``; any other: its top package's name).
SYSTEMS = {
    "loafer_rabbit": "rabbitmq",
    "loafer_amqp": "amqp",
    "loafer_sqs": "aws_sqs",
    "loafer_core": "memory",
}

# semantic conventions for messaging (as strings: no dependency on the semconv package)
SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
MESSAGE_ID = "messaging.message.id"
BATCH_COUNT = "messaging.batch.message_count"
ROUTING_KEY = "messaging.rabbitmq.destination.routing_key"
ERROR_TYPE = "error.type"


def _otel() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - the extra is installed where it is used
        raise ConfigurationError(
            "tracing needs opentelemetry-api: pip install 'loafer-core[otel]'"
        ) from None
    return trace


def _version() -> str:
    from loafer_core import __version__

    return __version__


class _Getter:
    """Reads a header table for a propagator: values as ``str`` (bytes decoded)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("utf-8", "replace")
        elif isinstance(value, list | tuple):
            return [str(v) for v in value]
        return [str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [str(k) for k in carrier]


def _fields(propagator: Any) -> frozenset[str]:
    try:
        return frozenset(propagator.fields)
    except Exception:  # a propagator without fields: always extract
        return frozenset()


def _described(provider: object) -> Description | None:
    if not isinstance(provider, Describable):
        return None
    try:
        return provider.description()
    except Exception:  # a description is no reason to fail a message
        return None


def _system(provider: object, description: Description | None = None) -> str:
    """``messaging.system``: the provider's :class:`Description`, else the module's."""
    if description is not None and description.system:
        return description.system
    module = type(provider).__module__.split(".")[0]
    system = SYSTEMS.get(module)
    if system is None:
        system = module.removeprefix("loafer_") or module
    return system


def _destination(provider: object, description: Description | None = None) -> str | None:
    """``messaging.destination.name``: the :class:`Description`'s, else a ``queue`` or
    ``address`` attribute (a provider that does not describe itself)."""
    if description is not None and description.destination:
        return description.destination
    for name in ("queue", "address"):
        value = getattr(provider, name, None)
        if isinstance(value, str) and value:
            return value
    return None


class _RouteInfo:
    __slots__ = ("attributes", "name", "rabbit", "reader")

    def __init__(self, route: RouteContext) -> None:
        provider = route.provider
        description = _described(provider)
        system = _system(provider, description)
        destination = _destination(provider, description) or route.name
        self.name = f"process {destination}"
        self.attributes: dict[str, Any] = {
            SYSTEM: system,
            DESTINATION: destination,
            OPERATION_TYPE: "process",
            OPERATION_NAME: "process",
            "loafer.route": route.name,
        }
        reader = getattr(route.translator, "message_headers", None)
        self.reader: Callable[[Any], Mapping[str, Any] | None] | None = (
            reader if callable(reader) else None
        )
        self.rabbit = system == "rabbitmq"


class Tracing:
    """Consumer spans for a manager's routes: a middleware (``async (delivery, route,
    call_next)``). Build it with :func:`tracing`.

    Arguments:
        tracer_provider: the ``TracerProvider`` spans are made with (OpenTelemetry's
            global one by default, read now).
        propagator: the ``TextMapPropagator`` reading and writing the trace context in
            headers (OpenTelemetry's global one, W3C trace context and baggage by
            default, read on each use).
    """

    def __init__(self, *, tracer_provider: Any = None, propagator: Any = None) -> None:
        trace = _otel()
        from opentelemetry import context as context_api
        from opentelemetry import propagate
        from opentelemetry.context import Context
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.tracer = trace.get_tracer(SCOPE, _version(), tracer_provider=tracer_provider)
        self._given_propagator = propagator
        self._global_propagator = propagate.get_global_textmap
        self._fields_of: tuple[Any, frozenset[str]] = (None, frozenset())
        self._getter = _Getter()
        self._empty = Context()
        self._attach = context_api.attach
        self._detach = context_api.detach
        self._set_value = context_api.set_value
        self._set_span = trace.set_span_in_context
        self._consumer = SpanKind.CONSUMER
        self._error = Status
        self._error_code = StatusCode.ERROR
        self._routes: dict[RouteContext, _RouteInfo] = {}
        self._extract_failed = False  # said once

    def __repr__(self) -> str:
        return f"<Tracing routes={len(self._routes)}>"

    @property
    def propagator(self) -> Any:
        """The propagator in use (the global one unless one was given)."""
        given = self._given_propagator
        return given if given is not None else self._global_propagator()

    def _extract_fields(self, propagator: Any) -> frozenset[str]:
        cached, fields = self._fields_of
        if cached is not propagator:
            fields = _fields(propagator)
            self._fields_of = (propagator, fields)
        return fields

    def parent_of(self, delivery: Delivery, route: RouteContext) -> Any:
        """The OpenTelemetry context the delivery's headers carry (an empty context when
        they carry none: the consumer span then starts a trace)."""
        info = self._routes.get(route)
        if info is None:
            info = self._routes[route] = _RouteInfo(route)
        return self._parent(delivery, info)

    def _parent(self, delivery: Delivery, info: _RouteInfo) -> Any:
        try:
            return self._extract(delivery, info)
        except Exception as exc:  # a context that cannot be read must not fail the message
            if not self._extract_failed:
                self._extract_failed = True
                logger.warning(
                    "route %r: could not read the trace context of message %s (%s: %s); "
                    "such messages start a trace of their own (said once)",
                    info.attributes["loafer.route"],
                    delivery.message_id,
                    type(exc).__name__,
                    _text(exc)[:REASON_LIMIT],
                )
            return self._empty

    def _extract(self, delivery: Delivery, info: _RouteInfo) -> Any:
        headers = delivery.metadata.get("headers")
        if not isinstance(headers, Mapping):
            headers = None
        if info.reader is not None:
            try:
                extra = info.reader(delivery.raw)
            except Exception:  # the translator will say what is wrong with the message
                extra = None
            if extra and isinstance(extra, Mapping):
                headers = {**headers, **extra} if headers else extra
        if not headers:
            return self._empty
        propagator = self.propagator
        fields = self._extract_fields(propagator)
        if fields and not any(name in headers for name in fields):
            return self._empty  # the usual untraced message: no parse at all
        return propagator.extract(headers, context=self._empty, getter=self._getter)

    async def __call__(
        self, delivery: Delivery, route: RouteContext, call_next: Process
    ) -> Outcome:
        """The middleware: one consumer span around the processing of ``delivery``."""
        info = self._routes.get(route)
        if info is None:
            info = self._routes[route] = _RouteInfo(route)
        parent = self._parent(delivery, info)
        attributes = info.attributes.copy()
        if delivery.message_id is not None:
            attributes[MESSAGE_ID] = delivery.message_id
        if delivery.attempt is not None:
            attributes["loafer.attempt"] = delivery.attempt
        if info.rabbit:
            key = delivery.metadata.get("routing_key")
            if key:
                attributes[ROUTING_KEY] = key
        span = self.tracer.start_span(
            info.name, context=parent, kind=self._consumer, attributes=attributes
        )
        token = self._attach(self._set_value(CONTEXT_KEY, self, self._set_span(span, parent)))
        try:
            outcome = await call_next(delivery)
        except BaseException as exc:  # an internal error: the delivery is retried
            self._detach(token)
            try:
                self._failed(span, exc)
            finally:
                span.end()
            raise
        self._detach(token)
        try:
            if span.is_recording():
                kind = outcome.kind
                span.set_attribute("loafer.outcome", kind._value_)
                if outcome.reason:
                    span.set_attribute("loafer.outcome.reason", outcome.reason[:REASON_LIMIT])
                if kind is OutcomeKind.RETRY and outcome.delay:
                    span.set_attribute("loafer.outcome.delay", float(outcome.delay))
                error = delivery.error
                if error is not None:
                    self._failed(span, error)
        except Exception as exc:  # not an Outcome: a middleware inside returned something else
            self._failed(span, exc)
            raise
        finally:
            span.end()
        return outcome

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Within the block, loafer's publishers trace with this instance's tracer and
        propagator (as they do in its handlers) rather than OpenTelemetry's global ones:
        for publishing from elsewhere (a web request, a script) with a tracer provider
        that is not the global one."""
        token = self._attach(self._set_value(CONTEXT_KEY, self))
        try:
            yield
        finally:
            self._detach(token)

    def _failed(self, span: Any, error: BaseException) -> None:
        _record(span, error, self._error, self._error_code)


def _text(error: BaseException) -> str:
    """``str(error)``, or a stand-in when that fails (it must not fail the message)."""
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__qualname__}: str() failed>"


def _cut(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, saying how much went."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} characters cut)"


def _record(span: Any, error: BaseException, status: Any, code: Any) -> None:
    """Record ``error`` on ``span`` as the SDK's ``record_exception`` does (``error.type``,
    an ``exception`` event, status ERROR), with its message and stack trace cut to
    :data:`MESSAGE_LIMIT` and :data:`STACKTRACE_LIMIT` characters: an exception quoting a
    1 MB body must not make a 1 MB span."""
    cls = type(error)
    name = cls.__qualname__
    module = cls.__module__
    text = _text(error)
    message = _cut(text, MESSAGE_LIMIT)
    frames = "".join(traceback.format_tb(error.__traceback__)) if error.__traceback__ else ""
    if len(frames) > STACKTRACE_LIMIT:  # the innermost frames, where it was raised
        frames = (
            f"... ({len(frames) - STACKTRACE_LIMIT} characters cut)\n" + frames[-STACKTRACE_LIMIT:]
        )
    span.set_attribute(ERROR_TYPE, name)
    span.add_event(
        "exception",
        {
            "exception.type": f"{module}.{name}" if module and module != "builtins" else name,
            "exception.message": message,
            "exception.stacktrace": f"Traceback (most recent call last):\n{frames}{name}: "
            f"{message}\n",
            "exception.escaped": "False",
        },
    )
    span.set_status(status(code, f"{name}: {text}"[:REASON_LIMIT]))


def tracing(*, tracer_provider: Any = None, propagator: Any = None) -> Tracing:
    """The tracing middleware: ``Manager(routes, middleware=[tracing()])`` (or a route's
    ``middleware=[...]``). See :class:`Tracing` for the arguments and the module
    docstring for what is traced."""
    return Tracing(tracer_provider=tracer_provider, propagator=propagator)


# -- publishing ------------------------------------------------------------------------------


class _Untraced:
    """What :func:`publish_span` gives when the process does not use OpenTelemetry."""

    __slots__ = ("headers",)

    def __init__(self, headers: Mapping[str, Any] | None) -> None:
        self.headers = headers

    def __enter__(self) -> Mapping[str, Any] | None:
        return self.headers

    def __exit__(self, *exc: object) -> None:
        return None


class _Traced:
    """A producer span, ended (with the exception, if any) when the publish returns."""

    __slots__ = ("headers", "injected", "span", "status")

    def __init__(self, span: Any, headers: dict[str, Any], injected: dict[str, Any], status: Any):
        self.span = span
        self.headers = headers
        self.injected = injected
        self.status = status

    def __enter__(self) -> dict[str, Any]:
        return self.headers

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        span = self.span
        try:
            if exc is not None and span.is_recording():
                from opentelemetry.trace import StatusCode

                _record(span, exc, self.status, StatusCode.ERROR)
        finally:
            span.end()


def publish_span(
    system: str,
    destination: str,
    headers: Mapping[str, Any] | None,
    *,
    message_id: Any = None,
    attributes: Mapping[str, Any] | None = None,
    count: int | None = None,
) -> _Untraced | _Traced:
    """For publishers: ``with publish_span("rabbitmq", queue, headers) as headers:`` then
    send with the ``headers`` it gives (the trace context injected into a copy).

    The producer span (``publish <destination>``, kind PRODUCER) lasts until the block
    ends (the broker's confirm), and records the exception that ends it. Inside a traced
    handler it is made with that middleware's tracer and propagator, elsewhere with
    OpenTelemetry's global ones. When the process does not use OpenTelemetry (its
    ``opentelemetry.trace`` module is not imported), nothing is made and ``headers``
    come back as given. ``count``: the number of messages of a batch sharing this span.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return _Untraced(headers)
    from opentelemetry import context as context_api
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind, Status

    current = context_api.get_current()
    owner = current.get(CONTEXT_KEY)
    if isinstance(owner, Tracing):
        tracer, propagator = owner.tracer, owner.propagator
    else:
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider) and not (
            trace.get_current_span(current).get_span_context().is_valid
        ):
            return _Untraced(headers)  # the API without an SDK, and no trace to pass on
        tracer = trace.get_tracer(SCOPE, _version())
        propagator = propagate.get_global_textmap()
    span_attributes: dict[str, Any] = {
        SYSTEM: system,
        DESTINATION: destination,
        OPERATION_TYPE: "send",
        OPERATION_NAME: "publish",
    }
    if message_id is not None:
        span_attributes[MESSAGE_ID] = str(message_id)
    if count is not None:
        span_attributes[BATCH_COUNT] = count
    if attributes:
        span_attributes.update((k, v) for k, v in attributes.items() if v is not None)
    span = tracer.start_span(
        f"publish {destination}",
        context=current,
        kind=SpanKind.PRODUCER,
        attributes=span_attributes,
    )
    injected: dict[str, Any] = {}
    propagator.inject(injected, context=trace.set_span_in_context(span, current))
    carrier: dict[str, Any] = {**headers, **injected} if headers else injected.copy()
    return _Traced(span, carrier, injected, Status)


def inject_each(
    span: _Untraced | _Traced, messages: Iterable[Any], headers_of: Callable[[Any], Any]
) -> Iterable[Any]:
    """The messages of a batch published under one ``span``, each given its trace
    context (``headers_of(message)``: the message's mutable header dict)."""
    if not isinstance(span, _Traced) or not span.injected:
        yield from messages
        return
    injected = span.injected
    for message in messages:
        headers_of(message).update(injected)
        yield message
