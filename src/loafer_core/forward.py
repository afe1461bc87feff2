"""Forwarding: a handler publishes to other brokers as part of handling a message.

A route given ``publish_to=`` (one publisher, or a mapping of names to publishers) lets
its handler publish in two ways:

- return :class:`Publish` values (one, or a list): the route publishes them all,
  concurrently, once the handler returned;
- call :func:`publish` (``await publish(body, to="audit")``) from inside the handler, or
  from a task the handler started; :func:`publish_soon` starts one without waiting.

The guarantee: an ACCEPT is settled only once every publish made for the delivery has
finished, and stays an ACCEPT only if every one of them was confirmed by its broker (our publishers
return only then: a RabbitMQ publisher confirm, an AMQP 1.0 ``accepted`` outcome, an
SQS/SNS success response). A publish that failed, timed out or was cut short turns the
delivery's ACCEPT into a RETRY, whatever the handler or the error handler said (it also
reaches the error handler when the handler let the error through, as any error does).
A REJECT or RELEASE decided by the handler stands; for any outcome but ACCEPT (and when
the handler is cut short), the publishes still in flight are cancelled before the
settlement (one already sent may still arrive). Publish before the handler returns: a
publish started later raises ``RuntimeError``. The result is at-least-once delivery
to the targets: a process killed between a target's confirm and the source's settlement
forwards that message again when it is redelivered (see
:mod:`loafer_core.idempotency` to narrow such duplicates).

The publishers of ``publish_to`` are opened when the :class:`~loafer_core.manager.Manager`
starts (before any route; a ``ConfigurationError`` such as a missing exchange stops it,
a broker not reachable yet is only logged: the first publish connects) and closed after
every route has drained (see :class:`PublisherService`). Handlers never open or close them.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from loafer_core._strings import checked_instance
from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.outcome import Outcome, OutcomeKind
from loafer_core.provider import Delivery, Publisher

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from loafer_core.context import RouteContext

__all__ = [
    "ForwardError",
    "Publish",
    "PublisherService",
    "Targets",
    "publish",
    "publish_soon",
    "publisher_services",
]

logger = logging.getLogger("loafer_core.forward")

DEFAULT = "default"
"""The name a single ``publish_to=publisher`` is known by."""

CANCEL_GRACE = 5.0
"""Seconds the publishes of a delivery get to end once cancelled (the handler cut short,
an outcome other than ACCEPT, a forced shutdown) before its settlement goes on without
them: a publisher whose publish ignores its cancellation cannot hold a worker, or the
shutdown, for ever (it is logged and left behind)."""


class ForwardError(ProviderError):
    """A publish made while handling a message failed or was not confirmed (the message
    is RETRIED). ``__cause__`` is the publisher's error."""


class Publish:
    """A message for the route to publish once the handler returned.

    ``Publish(body, to="audit", headers={...}, **options)``: ``body`` and ``headers`` as
    the target publisher's ``publish`` takes them; ``to`` names one of the route's
    ``publish_to`` targets (``None``: the only one, or the one named ``"default"``);
    ``options`` go to ``publish`` as they are (``routing_key=``, ``queue=``,
    ``group_id=``, ``message_id=``...).
    """

    __slots__ = ("body", "headers", "options", "to")

    def __init__(
        self,
        body: Any,
        *,
        to: str | None = None,
        headers: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        self.body = body
        self.to = to
        self.headers = headers
        self.options = options

    def __repr__(self) -> str:
        return f"Publish(to={self.to!r}, headers={self.headers!r}, options={self.options!r})"


def is_publish(result: Any) -> bool:
    """True for a :class:`Publish` or a list/tuple holding one (the route checks that
    every item is one)."""
    if isinstance(result, Publish):
        return True
    return isinstance(result, list | tuple) and any(isinstance(item, Publish) for item in result)


class Targets:
    """A route's ``publish_to``: named publishers (see the module docstring)."""

    def __init__(self, owner: str, publish_to: Any) -> None:
        if isinstance(publish_to, Mapping):
            items = dict(publish_to)
            if not items:
                raise ConfigurationError(
                    f"{owner}(publish_to=...): an empty mapping; give a publisher or "
                    "{name: publisher}"
                )
        else:
            items = {DEFAULT: publish_to}
        for name, target in items.items():
            if not isinstance(name, str) or not name:
                raise ConfigurationError(
                    f"{owner}(publish_to=...): target names must be non-empty str, got {name!r}"
                )
            checked_instance(
                f"{owner}(publish_to=...): {name!r}",
                target,
                Publisher,
                "a publisher (an object with async publish(body, *, headers=...))",
            )
        self.publishers: dict[str, Publisher] = items

    def __repr__(self) -> str:
        return f"Targets({sorted(self.publishers)})"

    def get(self, name: str | None) -> Publisher:
        """The publisher named ``name`` (``None``: the only one, or ``"default"``)."""
        publishers = self.publishers
        if name is None:
            if len(publishers) == 1:
                return next(iter(publishers.values()))
            name = DEFAULT
        try:
            return publishers[name]
        except KeyError:
            raise ConfigurationError(
                f"no publish_to target named {name!r} on this route (it has "
                f"{sorted(publishers)}); say to=... with one of them"
            ) from None

    # -- one delivery -----------------------------------------------------------------------

    async def process(
        self,
        route: RouteContext,
        process: Callable[[Delivery], Awaitable[Outcome]],
        delivery: Delivery,
    ) -> Outcome:
        """Run ``process`` (the route's) with a forwarding context; wait for every publish
        it started; turn its ACCEPT into a RETRY if one failed."""
        forwarding = _Forwarding(self)
        token = _current.set(forwarding)
        try:
            outcome = await process(delivery)
        except BaseException:  # cancelled, or a handler's SystemExit: nothing to wait for
            forwarding.close()
            await forwarding.cancel()
            raise
        finally:
            _current.reset(token)
        forwarding.close()
        if outcome.kind is not OutcomeKind.ACCEPT:
            # RETRY, REJECT or RELEASE already: the publishes still in flight cannot change
            # that; stop waiting for them (what was sent may still arrive)
            await forwarding.cancel()
            return outcome
        await forwarding.wait()
        failure = forwarding.failure
        if failure is not None:
            return route.failed(
                failure,
                delivery,
                "route %r: a publish made while handling message %s was not confirmed "
                "(%s); the message will be retried, not accepted",
                route.name,
                delivery.message_id,
                f"{type(failure).__name__}: {failure}",
            )
        return outcome

    async def returned(self, result: Any) -> Any:
        """Publish what the handler returned (a :class:`Publish` or a list of them), all
        at once, and wait for their confirms; ``True`` then. An empty list or tuple is
        nothing to publish: ``True``. Other results pass through; a list mixing
        ``Publish`` values with others raises ``TypeError`` (an error of the message)."""
        if isinstance(result, list | tuple) and not result:
            return True
        if not is_publish(result):
            return result
        forwarding = _current.get()
        if forwarding is None:  # the route's process() sets it: only a direct call lacks it
            raise RuntimeError("Targets.returned() outside a route's processing")
        items = [result] if isinstance(result, Publish) else list(result)
        for i, item in enumerate(items):
            if not isinstance(item, Publish):
                raise TypeError(
                    f"the handler returned a list mixing Publish(...) with other values: "
                    f"item {i} is a {type(item).__name__}; return Publish values only"
                )
        tasks = [forwarding.start(item) for item in items]
        await _all(tasks)
        return True


class _Forwarding:
    """The publishes of one delivery."""

    __slots__ = ("closed", "failure", "targets", "tasks")

    def __init__(self, targets: Targets) -> None:
        self.targets = targets
        self.tasks: set[asyncio.Task[None]] = set()
        self.failure: BaseException | None = None
        self.closed = False

    def start(self, item: Publish) -> asyncio.Task[None]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "publish()/publish_soon() run on the event loop; a sync handler (run in a "
                "thread) returns Publish(...) values instead"
            ) from None
        if self.closed:
            raise RuntimeError(
                "publish() after the handler returned: publish before it returns (or "
                "await the task that publishes)"
            )
        publisher = self.targets.get(item.to)  # a wrong name fails here, in the handler
        task = loop.create_task(self._publish(publisher, item), name="loafer:forward")
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def _publish(self, publisher: Publisher, item: Publish) -> None:
        try:
            await publisher.publish(item.body, headers=item.headers, **item.options)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise ForwardError(
                f"publishing to {item.to or 'the route target'!r} ({publisher!r}) failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            error: BaseException | None = ForwardError("a publish was cancelled before its confirm")
        else:
            error = task.exception()
        if error is not None and self.failure is None:
            self.failure = error

    async def wait(self) -> None:
        """Until every publish started (also while waiting) has finished; on
        cancellation, cancel them and let them end (their messages may or may not have
        arrived) before the delivery is settled."""
        try:
            while self.tasks:
                await asyncio.wait(set(self.tasks))
        except asyncio.CancelledError:
            await self.cancel()
            raise

    async def cancel(self) -> None:
        """Cancel the publishes still in flight and wait until they ended (at most
        :data:`CANCEL_GRACE` seconds: one ignoring its cancellation is left behind)."""
        tasks = set(self.tasks)
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        grace = CANCEL_GRACE
        _, pending = await asyncio.wait(tasks, timeout=grace)
        if pending:
            logger.warning(
                "%d publish(es) did not end within %ss of being cancelled; their message is "
                "settled without them (a publisher's publish must end when cancelled; %r)",
                len(pending),
                grace,
                self.targets,
            )

    def close(self) -> None:
        """No more publishes for this delivery."""
        self.closed = True


_current: contextvars.ContextVar[_Forwarding | None] = contextvars.ContextVar(
    "loafer_forwarding", default=None
)


async def _all(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for every task; raise the first failure once all have finished."""
    if not tasks:
        return
    await asyncio.wait(tasks)
    for task in tasks:
        if task.cancelled():
            raise ForwardError("a publish was cancelled before its confirm")
        error = task.exception()
        if error is not None:
            raise error


def _forwarding(caller: str) -> _Forwarding:
    forwarding = _current.get()
    if forwarding is None:
        raise RuntimeError(
            f"{caller}() is for handlers of a route with publish_to=...; this code runs "
            "outside one (or in a thread: return Publish(...) from a sync handler instead)"
        )
    return forwarding


async def publish(
    body: Any,
    *,
    to: str | None = None,
    headers: Mapping[str, Any] | None = None,
    **options: Any,
) -> None:
    """Publish to one of the current route's ``publish_to`` targets; return once the
    broker confirmed it, or raise :class:`ForwardError`.

    Call it from the handler (or a task the handler started, before it returns). The
    message being handled is settled only after this publish finished, and is RETRIED
    if it failed, even if the handler catches the error.
    """
    task = _forwarding("publish").start(Publish(body, to=to, headers=headers, **options))
    await task


def publish_soon(
    body: Any,
    *,
    to: str | None = None,
    headers: Mapping[str, Any] | None = None,
    **options: Any,
) -> asyncio.Task[None]:
    """Start a publish without waiting for it (several go out pipelined); the route waits
    for it before settling the message, and RETRIES the message if it failed. Returns its
    task (await it to see its error; you need not)."""
    return _forwarding("publish_soon").start(Publish(body, to=to, headers=headers, **options))


# -- lifecycle ------------------------------------------------------------------------------


START_TIMEOUT = 60.0
"""Seconds the manager waits for a ``publish_to`` publisher to open at start-up; past
that it is logged (as a broker not reachable) and the routes start: a connect that never
returns cannot hold the start-up."""


class PublisherService:
    """A publisher opened with the manager and closed after the drain (a
    :class:`~loafer_core.manager.Service`).

    Opening calls the publisher's ``start()``
    (:class:`~loafer_core.provider.PublisherLifecycle`); for publishers written before
    that protocol, ``connect()`` or ``async with`` entry, whichever it has. A
    ``ConfigurationError`` (a missing exchange or queue, refused credentials) is raised,
    so the manager does not start; any other failure (the broker not reachable yet) is
    logged, and the first publish connects. Closing calls ``close()``.
    """

    def __init__(self, publisher: Any) -> None:
        self.publisher = publisher
        self._entered = False

    def __repr__(self) -> str:
        return f"PublisherService({self.publisher!r})"

    async def start(self) -> None:
        """Open the publisher (see the class docstring), waiting at most
        :data:`START_TIMEOUT` seconds."""
        publisher = self.publisher
        opener = _opener(publisher)
        if opener is None:
            return
        timeout = START_TIMEOUT
        try:
            async with asyncio.timeout(timeout):
                await opener()
        except ConfigurationError:
            raise
        except TimeoutError:
            logger.warning(
                "publisher %r did not connect within %ss at start-up; its first publish "
                "will try again (the messages whose publish fails are retried)",
                publisher,
                timeout,
            )
        except Exception as exc:
            logger.warning(
                "publisher %r could not connect at start-up (%s: %s); its first publish "
                "will try again (the messages whose publish fails are retried)",
                publisher,
                type(exc).__name__,
                exc,
            )

    async def close(self) -> None:
        """Close the publisher (flushing what it buffers)."""
        close = getattr(self.publisher, "close", None)
        if callable(close):
            result = close()
            if inspect.isawaitable(result):
                await result


def _opener(publisher: Any) -> Callable[[], Awaitable[Any]] | None:
    for name in ("start", "connect"):
        method = getattr(publisher, name, None)
        if callable(method) and _no_required_arguments(method):
            return method  # type: ignore[no-any-return]
    enter = getattr(publisher, "__aenter__", None)
    if callable(enter):
        return enter  # type: ignore[no-any-return]
    return None


def _no_required_arguments(method: Any) -> bool:
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not inspect.Parameter.empty
        or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in parameters
    )


class _Forwards(Protocol):
    """A route with ``publish_to`` targets (or ``None``)."""

    publish_to: Targets | None


def publisher_services(routes: Iterable[_Forwards]) -> list[PublisherService]:
    """One :class:`PublisherService` per distinct publisher in the routes' ``publish_to``."""
    seen: set[int] = set()
    services: list[PublisherService] = []
    for route in routes:
        targets = route.publish_to
        if targets is None:
            continue
        for publisher in targets.publishers.values():
            if id(publisher) not in seen:
                seen.add(id(publisher))
                services.append(PublisherService(publisher))
    return services
