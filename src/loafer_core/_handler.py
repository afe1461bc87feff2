"""Handlers and error handlers: the user's code, adapted to one async calling convention.

A handler is any of:

- ``async def handler(content, metadata)``: awaited on the event loop;
- a plain function: run on threads of its route (up to ``max_concurrency``), with the
  caller's contextvars;
- an object with ``handle(content, metadata)`` (sync or async) and an optional sync
  ``stop()`` called once at shutdown;
- an object whose ``__call__`` is ``async``: awaited (Loafer 2.x ran it in a thread and
  acknowledged the message without running it);
- anything returning an awaitable: the awaitable is awaited.

A handler object may list, in a ``loafer_services`` attribute, services (``async
start()`` and ``async close()``) a :class:`~loafer_core.manager.Manager` running its route
starts with the routes and closes after the drain (the publisher of
:class:`~loafer_sqs.SQSHandler`, say).

An error handler is ``(exc_type, exc, message)``, sync or async, returning a ``bool``, an
:class:`~loafer_core.outcome.Outcome` or ``None``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn, Protocol, runtime_checkable

from loafer_core._strings import refuse_string
from loafer_core.errors import ConfigurationError
from loafer_core.typed import content_converter

__all__ = [
    "ErrorHandler",
    "Handler",
    "HandlerObject",
    "InThreads",
    "adapt_error_handler",
    "adapt_handler",
    "adapt_typed",
    "converter_of",
    "really_cancelled",
]

logger = logging.getLogger("loafer_core.handler")

Handler = Callable[[Any, Mapping[str, Any]], Any]
ErrorHandler = Callable[[type[BaseException], BaseException, Any], Any]
AsyncCall = Callable[..., Awaitable[Any]]


@runtime_checkable
class HandlerObject(Protocol):
    """A class-based handler: ``handle(content, metadata)``, optional ``stop()``."""

    def handle(self, content: Any, metadata: Mapping[str, Any]) -> Any:
        """Process one message; the return value is mapped to an outcome."""
        ...


def _is_async_callable(obj: Any) -> bool:
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(type(obj), "__call__", None)  # noqa: B004 - looking at the class
    return call is not None and inspect.iscoroutinefunction(call)


def _as_async(fn: Callable[..., Any]) -> AsyncCall:
    """Return a callable whose call is awaitable, whatever ``fn`` is.

    An async ``fn`` is returned as it is (callers await its result and, should that be
    awaitable again, await it too: see :func:`settle_result`). A sync ``fn`` is wrapped in
    an :class:`InThreads`, which runs it on threads of its own with the caller's contextvars.
    """
    if _is_async_callable(fn):
        return fn
    return InThreads(fn)


GROW_AFTER = 0.02
"""Seconds a sync handler's call may wait for a thread before its route starts more."""


def _core_threads() -> int:
    """Threads a sync route starts at once, as needed: the size of the event loop's
    default executor (``min(32, cpus + 4)``), so a sync route starts like
    ``asyncio.to_thread``; more come only when calls wait (see :class:`InThreads`)."""
    return min(32, (os.cpu_count() or 1) + 4)


class InThreads:
    """Calls a sync function on daemon threads of its own, with the caller's contextvars.

    Up to ``max_workers`` threads (the route sets its ``max_concurrency``). The first
    ``core`` (as many as the event loop's default executor has) start as soon as a call
    finds no idle thread; beyond them, a thread starts for each call that has waited
    ``grow_after`` seconds (:data:`GROW_AFTER` by default) without one. Quick handlers
    (microseconds to a few milliseconds) so keep to a few threads, which is cheaper
    under the GIL than one per slot; blocking handlers (I/O, sleeps, a barrier) get one
    thread per slot within a few tens of milliseconds. Threads end only at :meth:`close`.

    Results come back to the event loop in batches: a thread that finishes while the
    loop has not yet collected earlier results adds its own to them instead of waking
    the loop again (``run_in_executor`` wakes it once per call).

    Each event loop that calls gets threads of its own (a pool whose loop has closed is
    dropped). Daemon threads, not the event loop's default executor: a sync handler stuck
    for good, once cancelled by ``handler_timeout`` or a forced stop, cannot keep the
    process from exiting (the default executor is joined at exit). :meth:`close` lets the
    threads end without waiting for them.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        max_workers: int = 10,
        *,
        core: int | None = None,
        grow_after: float = GROW_AFTER,
    ) -> None:
        self.fn = fn
        self.max_workers = max_workers
        self.core = _core_threads() if core is None else core
        self.grow_after = grow_after
        #: called on the event loop with :attr:`stuck` whenever it changes
        self.on_stuck: Callable[[int], None] | None = None
        self._pools: dict[asyncio.AbstractEventLoop, _Threads] = {}

    @property
    def threads(self) -> int:
        """How many threads are running now (for every event loop)."""
        return sum(pool.threads for pool in list(self._pools.values()))

    @property
    def stuck(self) -> int:
        """Threads still running a call that overran its deadline (see
        :meth:`call_with_deadline`): busy, though nobody waits for them any more."""
        return sum(pool.abandoned for pool in list(self._pools.values()))

    def _pool(self, loop: asyncio.AbstractEventLoop) -> _Threads:
        pool = self._pools.get(loop)
        if pool is None:
            for old_loop, old in list(self._pools.items()):
                if old_loop.is_closed():
                    self._pools.pop(old_loop, None)
                    old.close()
            pool = _Threads(loop, self.max_workers, self.core, self.grow_after, self._stuck)
            self._pools[loop] = pool
        return pool

    def _stuck(self) -> None:
        if self.on_stuck is not None:
            self.on_stuck(self.stuck)

    async def __call__(self, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop) or self._pool(loop)
        future = loop.create_future()
        pool.submit(future, contextvars.copy_context().run, self.fn, args)
        try:
            return await future
        except _Carried as carried:
            raise carried.exc from None

    async def call_with_deadline(self, timeout: float, *args: Any) -> Any:
        """Call like ``__call__``, but raise :class:`HandlerOverrun` once the call has *run*
        ``timeout`` seconds: time spent waiting for a thread does not count. The thread of
        an overrun call is counted in :attr:`stuck` until the call returns."""
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop) or self._pool(loop)
        future = loop.create_future()
        watch = _Watch()
        pool.submit(future, contextvars.copy_context().run, self.fn, args, watch)
        wait: float | None = timeout
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=wait)
                if done:
                    break
                began = watch.started
                if began is None:  # still waiting for a thread: not its time yet
                    wait = timeout
                    continue
                wait = began + timeout - time.monotonic()
                if wait <= 0:
                    if pool.abandon(watch):
                        raise HandlerOverrun(timeout)
                    wait = None  # it returned just now: its result is on its way
        finally:
            if not future.done():
                future.cancel()
        try:
            return future.result()
        except _Carried as carried:
            raise carried.exc from None

    def close(self) -> None:
        """Let the threads end once idle (a thread still running is not waited for)."""
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            pool.close()


class _Threads:
    """The daemon threads of one :class:`InThreads` for one event loop.

    :meth:`submit` (on the loop) queues a call and starts a thread if none is idle and
    fewer than ``core`` run; while calls wait and more threads may start, a timer on the
    loop looks every ``grow_after`` seconds and starts a thread for each call that was
    already waiting at the previous look. Each call's result is set on its asyncio future
    by the loop, in batches (see :meth:`_collect`).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_workers: int,
        core: int,
        grow_after: float,
        on_stuck: Callable[[], None] = lambda: None,
    ) -> None:
        self.loop = loop
        self._on_stuck = on_stuck
        #: threads running a call abandoned at its deadline (see InThreads.call_with_deadline)
        self.abandoned = 0
        self._max_workers = max(1, max_workers)
        self._core = max(1, min(core, self._max_workers))
        self._grow_after = grow_after
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._results: deque[tuple[asyncio.Future[Any], bool, Any]] = deque()
        self._collecting = False  # a _collect is scheduled on the loop and has not begun
        self.threads = 0
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._closed = False
        self._watch: asyncio.TimerHandle | None = None
        # Calls submitted (by the loop only); those not yet taken by a thread are the
        # queue's size, exactly. _marked: calls submitted before the previous look.
        self._submitted = 0
        self._marked = 0

    def submit(
        self,
        future: asyncio.Future[Any],
        run: Callable[..., Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        watch: _Watch | None = None,
    ) -> None:
        """Have a thread call ``run(fn, *args)`` and set ``future`` to what it returns or
        raises (unless ``future`` is cancelled first: then the call may be skipped); a
        ``watch`` is told when the call starts and ends."""
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot run a handler after its threads were closed")
            self._submitted += 1
            self._work.put((future, run, fn, args, watch))
            if not self._idle.acquire(blocking=False) and self.threads < self._core:
                self._start()
        if self._watch is None and self._core <= self.threads < self._max_workers:
            self._marked = self._submitted
            self._watch = self.loop.call_later(self._grow_after, self._look)

    def _look(self) -> None:
        """On the loop: a thread for each call submitted before the previous look and
        still waiting; look again while calls wait and more threads may start."""
        self._watch = None
        with self._lock:
            if self._closed:
                return
            waiting = self._work.qsize()
            taken = self._submitted - waiting
            for _ in range(min(self._marked - taken, self._max_workers - self.threads)):
                self._start()
            self._marked = self._submitted
            if waiting and self.threads < self._max_workers:
                self._watch = self.loop.call_later(self._grow_after, self._look)

    def _start(self) -> None:  # with self._lock held
        self.threads += 1
        try:
            threading.Thread(
                target=self._run, name=f"loafer-handler-{self.threads}", daemon=True
            ).start()
        except RuntimeError:  # "can't start new thread": the process is at its limit
            self.threads -= 1
            if self.threads == 0:
                raise
            logger.warning("a sync handler's thread could not start; %d run", self.threads)

    def _run(self) -> None:
        work, results = self._work, self._results
        while True:
            item = work.get()
            if item is None:
                work.put(None)  # wake the next thread: they all end
                return
            future, run, fn, args, watch = item
            del item
            if not future.cancelled():  # a read of its state, safe from any thread
                if watch is not None:
                    watch.started = time.monotonic()
                try:
                    results.append((future, True, run(fn, *args)))
                except BaseException as exc:
                    results.append((future, False, exc))
                    del exc
                if watch is not None:
                    self._finished(watch)
                # Wake the loop unless a _collect is already scheduled and not yet begun:
                # that one will take this result too (it clears the flag before it takes).
                if not self._collecting:
                    self._collecting = True
                    try:
                        self.loop.call_soon_threadsafe(self._collect)
                    except RuntimeError:  # the loop is closed: nobody waits any more
                        results.clear()
            del future, run, fn, args, watch
            self._idle.release()

    def abandon(self, watch: _Watch) -> bool:
        """On the loop: the call of ``watch`` overran its deadline; its thread counts as
        stuck until the call returns. False if it has just returned."""
        with self._lock:
            if watch.finished:
                return False
            watch.abandoned = True
            self.abandoned += 1
        self._on_stuck()
        return True

    def _finished(self, watch: _Watch) -> None:  # on the thread
        with self._lock:
            watch.finished = True
            if not watch.abandoned:
                return
            self.abandoned -= 1
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody to tell
            self.loop.call_soon_threadsafe(self._on_stuck)

    def _collect(self) -> None:
        """On the loop: set the futures of every result the threads have left."""
        self._collecting = False
        results = self._results
        while results:
            future, ok, value = results.popleft()
            if future.done():
                continue  # cancelled while its call ran
            if ok:
                future.set_result(value)
            elif isinstance(value, StopIteration):  # a future refuses it
                future.set_exception(RuntimeError(f"handler raised {value!r}"))
            elif isinstance(value, GeneratorExit):
                # asyncio throws a future's exception into the awaiting coroutine, and a
                # thrown GeneratorExit closes it: carried, then raised by InThreads.__call__
                future.set_exception(_Carried(value))
            else:
                future.set_exception(value)

    def close(self) -> None:
        """Let the threads end once the work queued before this is done (any thread)."""
        with self._lock:
            self._closed = True
            self._work.put(None)


class HandlerOverrun(Exception):
    """A sync handler's call ran past its deadline (see :meth:`InThreads.call_with_deadline`)."""


class _Watch:
    """When a watched call started (monotonic seconds) and whether it ended or was
    abandoned at its deadline; ``finished`` and ``abandoned`` change under the pool's lock."""

    __slots__ = ("abandoned", "finished", "started")

    def __init__(self) -> None:
        self.started: float | None = None
        self.finished = False
        self.abandoned = False


class _Carried(Exception):
    """Carries a GeneratorExit from a handler's thread to the coroutine awaiting it."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(exc)
        self.exc = exc


async def settle_result(result: Any) -> Any:
    """Await ``result`` for as long as it is awaitable (a handler may return an awaitable)."""
    while inspect.isawaitable(result):
        result = await result
    return result


def needs_instance(cls: type, method: str) -> bool:
    """True when the class ``cls`` was given where an instance is needed: its ``method`` is
    a plain function (an instance method needing ``self``). A class whose ``method`` is a
    static or class method works as it is."""
    return inspect.isfunction(inspect.getattr_static(cls, method, None))


def adapt_handler(handler: Any) -> tuple[AsyncCall, Callable[[], Any] | None, str]:
    """Return ``(call, stop, description)`` for any supported handler shape."""
    if handler is None:
        raise ConfigurationError("Route(handler=...): a handler is required")
    refuse_string("Route(handler=...)", handler, "the function, or an object with handle(), itself")
    if isinstance(handler, type) and (
        needs_instance(handler, "handle") or getattr(handler, "handle", None) is None
    ):
        raise ConfigurationError(
            f"Route(handler=...): got the class {handler.__name__}; pass an instance "
            f"({handler.__name__}(...)) or a function"
        )
    handle = getattr(handler, "handle", None)
    if handle is not None and callable(handle) and not inspect.isfunction(handler):
        stop = getattr(handler, "stop", None)
        if stop is not None and not callable(stop):
            raise ConfigurationError(
                f"Route(handler=...): {getattr(handler, '__name__', type(handler).__name__)}"
                ".stop must be callable"
            )
        owner = handler.__name__ if isinstance(handler, type) else type(handler).__name__
        what = f"{owner}.handle"
        _refuse_unless_takes("handler", handle, what, "(content, metadata)", 2)
        return _as_async(handle), stop, what
    if not callable(handler):
        raise ConfigurationError(
            "Route(handler=...): expected a callable (content, metadata) or an object with "
            f"a handle(content, metadata) method, got {type(handler).__name__}"
        )
    name = _name(handler)
    _refuse_unless_takes("handler", handler, name, "(content, metadata)", 2)
    return _as_async(handler), None, name


def _takes(fn: Any, count: int) -> bool | None:
    """Whether ``fn`` can be called with ``count`` positional arguments; None when Python
    cannot tell (some builtins). The signature is the callable's own, not that of what a
    ``functools.wraps`` decorator wrapped (the wrapper is what gets called)."""
    try:
        signature = inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*([None] * count))
    except TypeError:
        return False
    return True


def _refuse_unless_takes(argument: str, fn: Any, what: str, expected: str, count: int) -> None:
    """Refuse, at construction, a callable that cannot take ``count`` positional
    arguments (it would fail on every message)."""
    if _takes(fn, count) is False:
        _refuse(argument, fn, what, expected)


def _refuse(argument: str, fn: Any, what: str, expected: str) -> NoReturn:
    signature = inspect.signature(fn, follow_wrapped=False)
    raise ConfigurationError(
        f"Route({argument}=...): {what} must accept {expected}, but its signature is "
        f"{what.rsplit('.', 1)[-1]}{signature}"
    )


def _name(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__name__)


def adapt_error_handler(error_handler: Any) -> AsyncCall | None:
    """Return an async callable ``(exc_type, exc, message)`` for an error handler (or None
    for the default).

    An error handler takes ``(exc_type, exc, message)``, as Loafer 2.x's documentation
    says; one taking two arguments is called as Loafer 2.x's code called it:
    ``(exc_info, message)``, with ``exc_info`` the ``(exc_type, exc, traceback)`` tuple.
    """
    if error_handler is None:
        return None
    refuse_string(
        "Route(error_handler=...)", error_handler, "the function (exc_type, exc, message) itself"
    )
    if not callable(error_handler):
        raise ConfigurationError(
            "Route(error_handler=...): expected a callable (exc_type, exc, message), "
            f"got {type(error_handler).__name__}"
        )
    if isinstance(error_handler, type):
        raise ConfigurationError(
            f"Route(error_handler=...): got the class {error_handler.__name__}; pass an "
            "instance or a function"
        )
    if _takes(error_handler, 3) is False:
        if not _takes(error_handler, 2):
            _refuse(
                "error_handler",
                error_handler,
                _name(error_handler),
                "(exc_type, exc, message) or (exc_info, message)",
            )
        return _as_async(_exc_info_shape(error_handler))
    return _as_async(error_handler)


def _exc_info_shape(error_handler: Callable[..., Any]) -> Callable[..., Any]:
    """Adapt a Loafer 2.x ``(exc_info, message)`` error handler to ``(exc_type, exc,
    message)``, keeping it sync or async."""
    if _is_async_callable(error_handler):

        async def call_async(exc_type: Any, exc: BaseException, message: Any) -> Any:
            return await error_handler((exc_type, exc, exc.__traceback__), message)

        return call_async

    def call(exc_type: Any, exc: BaseException, message: Any) -> Any:
        return error_handler((exc_type, exc, exc.__traceback__), message)

    return call


def really_cancelled() -> bool:
    """True if the current task is being cancelled (not merely seeing a stray CancelledError)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def converter_of(handler: Any) -> Callable[[Any], Any] | None:
    """The typed-content converter of a handler (of its ``handle`` for a handler object):
    what turns the translated content into the model, dataclass, TypedDict or Struct its
    first parameter declares (see :mod:`loafer_core.typed`); ``None`` for an untyped one."""
    handle = getattr(handler, "handle", None)
    converter: Callable[[Any], Any] | None = content_converter(
        handle if callable(handle) and not inspect.isfunction(handler) else handler
    )
    return converter


def adapt_typed(handler: Any) -> Callable[[Any, Mapping[str, Any]], Awaitable[Any]]:
    """One handler as an async ``(content, metadata) -> result``, its content typed and its
    result settled (each entry of a :class:`~loafer_core.handlers.Handlers`)."""
    call, _stop, _name = adapt_handler(handler)
    convert = converter_of(handler)

    async def run(content: Any, metadata: Mapping[str, Any]) -> Any:
        if convert is not None:
            content = convert(content)
        return await settle_result(await call(content, metadata))

    return run
