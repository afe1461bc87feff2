"""The reactor-thread bridge: a proton Container in its own thread, talking to asyncio.

Threading model::

    asyncio loop thread                         reactor thread ("loafer-amqp-...")
    -------------------                         ----------------------------------
    ReactorClient.call(fn, *args) --+
        (deque + one EventInjector  |  ApplicationEvent("loafer_wakeup")
         trigger per batch)         +--------->  on_loafer_wakeup: run every queued fn
                                                 (exceptions caught and logged)
    _drain_posted() <-----------------+          ReactorClient.post(fn, *args)
        (runs every posted fn)        +--------  (deque + one loop.call_soon_threadsafe
                                                  per batch)

Every proton object (Container, Connection, Session, Link, Delivery) is created and
touched only in the reactor thread. The asyncio side never polls: it awaits futures and
events that posted callbacks resolve. If the reactor thread ends for any reason, the
asyncio side learns it at once (``on_thread_end``) and every pending or later call
raises :class:`~loafer_core.errors.ProviderError`.

Connection management is ours, not proton's (``reconnect=False``): a lost transport, or
a session or link closed by the peer with an error, ends the current *generation*; the
client then opens a fresh connection (or session) after a delay from proton's
:func:`~proton.reactor.delay_iter` backoff. Deliveries of a dead generation are dropped,
never settled on the new one (the broker has requeued them already).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from proton import (
    Condition,
    Connection,
    Endpoint,
    Handler,
    Message,
    SSLDomain,
    SSLException,
    SSLUnavailable,
)
from proton import Delivery as ProtonDelivery
from proton._reactor import delay_iter
from proton.handlers import IncomingMessageHandler, MessagingHandler
from proton.reactor import ApplicationEvent, Container, EventInjector

from loafer_amqp._url import LOGGERS, URL_RULES, mask_url, parse_url
from loafer_core import kit
from loafer_core.errors import ConfigurationError, LoaferError, ProviderError
from loafer_core.policy import check_number
from loafer_core.settings import Settings, from_flat

if TYPE_CHECKING:
    from loafer_amqp.settings import AMQPCommonSettings

__all__ = [
    "LOGGERS",
    "URL_RULES",
    "ConnectionSettings",
    "ReactorClient",
    "mask_url",
    "settings_from",
]

logger = logging.getLogger("loafer_amqp")

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound=Settings)

#: Error conditions that mean "the set-up is wrong" when they happen at start-up.
CONFIG_CONDITIONS = frozenset(
    {
        "amqp:not-found",
        "amqp:unauthorized-access",
        "amqp:precondition-failed",
        "amqp:invalid-field",
        "amqp:not-allowed",
        "amqp:not-implemented",
        "amqp:resource-deleted",
    }
)


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything needed to open a connection. ``password`` never appears in ``repr``."""

    scheme: str
    host: str
    port: int
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    virtual_host: str | None = None
    sasl_mechanisms: str | None = None
    heartbeat: float | None = 60.0
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    ssl_verify: bool = True
    reconnect_initial: float = 0.1
    reconnect_max_delay: float = 10.0
    container_id: str | None = None

    def __post_init__(self) -> None:
        if self.heartbeat is not None:
            check_number("AMQP connection", "heartbeat", self.heartbeat, minimum=0)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        **options: Any,
    ) -> ConnectionSettings:
        """Parse ``amqp[s]://[user[:password]@]host[:port]`` (explicit user/password win)."""
        parts = parse_url(url)
        secret = {"password": password, "ssl_key_password": options.get("ssl_key_password")}
        kit.protect(LOGGERS, kit.secrets_of(url, URL_RULES, secret), urls=URL_RULES)
        return cls(
            scheme=parts.scheme,
            host=parts.host,
            port=parts.port,
            user=user if user is not None else parts.user,
            password=password if password is not None else parts.password,
            **options,
        )

    @classmethod
    def of(cls, settings: AMQPCommonSettings) -> ConnectionSettings:
        """What the reactor thread connects with, from a provider's or publisher's
        settings (frozen: shared with the reactor thread as it is). The TLS files are
        read now: a bad one is a ``ConfigurationError`` at construction."""
        login, tls = settings.amqp, settings.tls
        made = cls.from_url(
            settings.connection.url,
            user=login.user,
            password=login.password,
            sasl_mechanisms=login.sasl_mechanisms,
            virtual_host=login.virtual_host,
            heartbeat=login.heartbeat,
            ssl_ca=tls.ca,
            ssl_cert=tls.cert,
            ssl_key=tls.key,
            ssl_key_password=tls.key_password,
            ssl_verify=tls.verify,
            reconnect_max_delay=settings.timeouts.reconnect,
            container_id=settings.connection.name,
        )
        made.ssl_domain()
        return made

    @property
    def safe_url(self) -> str:
        """The URL without any credentials (what proton and the logs see)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def display_url(self) -> str:
        """The URL for reprs and logs: user shown, password masked."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.user is None:
            return f"{self.scheme}://{host}:{self.port}"
        secret = f":{kit.MASK}" if self.password is not None else ""
        return f"{self.scheme}://{quote(self.user, safe='')}{secret}@{host}:{self.port}"

    def description(self, address: str) -> kit.Description:
        """What a provider or publisher on ``address`` over this connection says of
        itself (:class:`~loafer_core.provider.Describable`): never the password."""
        server = None
        if self.host:
            host = f"[{self.host}]" if ":" in self.host else self.host
            server = kit.Server(
                protocol="amqp1",
                host=f"{host}:{self.port}",
                protocol_version="1.0",
                description="AMQP 1.0 over TLS (amqps)" if self.scheme == "amqps" else None,
            )
        return kit.Description(
            kind="amqp",
            system="amqp",
            destination=address,
            address=self.display_url,
            server=server,
            bindings={"amqp1": {}},  # the amqp1 binding has no fields (AsyncAPI 3.0)
        )

    def ssl_domain(self) -> SSLDomain | None:
        """The client SSL domain for ``amqps://`` (None for plain ``amqp://``)."""
        if self.scheme != "amqps":
            if self.ssl_ca or self.ssl_cert or self.ssl_key:
                raise ConfigurationError("TLS options (ssl_*) need an amqps:// URL")
            return None
        if self.ssl_cert and not self.ssl_key:
            raise ConfigurationError("ssl_cert needs ssl_key")
        try:
            domain = SSLDomain(SSLDomain.MODE_CLIENT)
            if self.ssl_ca:
                domain.set_trusted_ca_db(self.ssl_ca)
            if self.ssl_verify:
                domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME, self.ssl_ca)
            else:
                domain.set_peer_authentication(SSLDomain.ANONYMOUS_PEER)
            if self.ssl_cert and self.ssl_key:
                domain.set_credentials(self.ssl_cert, self.ssl_key, self.ssl_key_password)
        except (SSLException, SSLUnavailable) as exc:
            raise ConfigurationError(
                f"TLS set-up failed (check ssl_ca/ssl_cert/ssl_key files): {exc}"
            ) from None
        return domain

    def mechanisms(self) -> str:
        """SASL mechanisms to offer: the explicit choice, else PLAIN with a user, else ANONYMOUS."""
        if self.sasl_mechanisms:
            return self.sasl_mechanisms
        return "PLAIN" if self.user is not None else "ANONYMOUS"


def settings_from(
    settings_type: type[S], owner: str, first: Any, address: Any, options: dict[str, Any]
) -> S:
    """The settings an ``AMQPProvider(...)`` / ``AMQPPublisher(...)`` call gives: its
    settings object as it is, or ``settings_type`` built from today's arguments (``url``
    and ``address``, positional or not, and the other flat keywords; see
    :func:`~loafer_core.settings.from_flat`). A settings object with anything else is
    refused: there would be two values for the same thing."""
    if isinstance(first, settings_type):
        extra = sorted(options) + (["address"] if address is not None else [])
        if extra:
            raise ConfigurationError(
                f"{owner}: {', '.join(extra)} given with a settings object "
                f"({settings_type.__name__}): put them in it (settings.replace(...)) or "
                "give only keywords"
            )
        return first
    if isinstance(first, Settings):
        raise ConfigurationError(
            f"{owner}: expected {settings_type.__name__} or a URL, got {type(first).__name__}"
        )
    values = dict(options)
    for key, value in (("url", first), ("address", address)):
        if value is None:
            continue
        if key in values:
            raise ConfigurationError(f"{owner}: {key!r} given twice (as an argument and a keyword)")
        values[key] = value
    if "url" not in values and "connection" not in values:
        raise ConfigurationError(f"{owner}(url=...): required (the broker's URL: amqp://host:port)")
    return from_flat(settings_type, owner, values)


def describe(condition: Condition | None) -> str:
    """``name: description`` of an AMQP error condition (or ``"no condition"``)."""
    if condition is None:
        return "no error condition"
    if condition.description:
        return f"{condition.name}: {condition.description}"
    return str(condition.name)


def guarded(method: F) -> F:
    """Run a reactor callback, logging (never propagating) an ``Exception`` it raises.

    A ``BaseException`` that is not an ``Exception`` still propagates and ends the
    reactor thread; the asyncio side then raises ProviderError instead of hanging.
    """

    @functools.wraps(method)
    def wrapper(self: ReactorClient, *args: Any) -> Any:
        try:
            return method(self, *args)
        except Exception:
            logger.exception("%s: error in reactor callback %s", self.label, method.__name__)
            return None

    return wrapper  # type: ignore[return-value]


class Timer(Handler):
    """A proton timer task running ``callback`` in the reactor thread.

    proton keeps a scheduled task (and so this handler) in the Container's timer heap
    until it fires, even once cancelled or once the reactor has stopped. The Container
    itself is pinned by the attachment records of its C connection objects (held in
    cproton's global table), so a timer still pointing at its client would keep the
    client, its owner and every proton object they reference alive for good: a timer
    lets go of both as soon as it fires, is cancelled, or the reactor thread ends.
    """

    def __init__(self, client: ReactorClient, callback: Callable[[], None]) -> None:
        self._client: ReactorClient | None = client
        self._callback: Callable[[], None] | None = callback
        self.label = client.label
        self._task: Any = None

    def on_timer_task(self, event: Any) -> None:
        callback = self._callback
        self.discard()
        if callback is None:
            return
        try:
            callback()
        except Exception:
            logger.exception("%s: error in reactor timer", self.label)

    def cancel(self) -> None:
        """Reactor side: the callback will not run."""
        if self._task is not None:
            self._task.cancel()
        self.discard()

    def discard(self) -> None:
        """Let go of the client and the callback (the task may stay in proton's heap)."""
        client = self._client
        if client is not None:
            client._timers.discard(self)
        self._client = None
        self._callback = None
        self._task = None


class _SafeIncoming(IncomingMessageHandler):
    """proton's incoming-message handler, but a transfer that cannot be decoded is
    rejected (and logged) instead of raising out of the reactor."""

    def on_delivery(self, event: Any) -> None:
        dlv = event.delivery
        link = dlv.link  # each access builds a new wrapper: take it once
        if link.is_receiver and dlv.readable and not dlv.partial and not dlv.aborted:
            try:
                message = Message()
                message.decode(link.recv(dlv.pending))
            except Exception as exc:
                link.advance()
                logger.error("undecodable AMQP message rejected: %s", exc)
                dlv.local.condition = Condition("loafer:undecodable", str(exc)[:512])
                dlv.update(ProtonDelivery.REJECTED)
                dlv.settle()
                # its credit was used: ask for it back (else N such messages stall a
                # consumer of capacity N for good)
                replenish = getattr(self.delegate, "request_replenish", None)
                if callable(replenish):
                    replenish()
                return
            link.advance()
            event.message = message
            if link.state & Endpoint.LOCAL_CLOSED:
                return  # not ours any more; the broker requeues it
            self.on_message(event)
            return
        super().on_delivery(event)


class ReactorClient(MessagingHandler):
    """One connection, one session and its links, driven by a Container in its own thread.

    Subclasses implement :meth:`open_links` (create links on the new session, in the
    reactor thread), :meth:`links_ready` (every link is attached), :meth:`generation_lost`
    (the connection or session died: drop what belonged to it) and may override
    :meth:`check_peer`.
    """

    def __init__(self, settings: ConnectionSettings, label: str) -> None:
        super().__init__(prefetch=0, auto_accept=False, auto_settle=True)
        children: list[Any] = list(self.handlers)  # type: ignore[arg-type]
        self.handlers = [
            _SafeIncoming(False, h.delegate) if type(h) is IncomingMessageHandler else h
            for h in children
        ]
        self.settings = settings
        self.label = label
        # Shared, lock-protected queues between the two threads.
        self._cmd_lock = threading.Lock()
        self._cmds: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._cmd_scheduled = False
        self._post_lock = threading.Lock()
        self._posted: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._post_scheduled = False
        self._outbox: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []  # reactor only
        self._injector = EventInjector()
        self._wakeup = ApplicationEvent("loafer_wakeup")
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # asyncio-side state.
        self.ready: asyncio.Future[None] | None = None
        self.ended: asyncio.Future[None] | None = None
        self.dead: str | None = None  # why the reactor thread ended, once it has
        self.attached = False  # last known link state (for health checks)
        # Reactor-side state.
        self._container: Container | None = None
        self._conn: Connection | None = None
        self._session: Any = None
        self.generation = 0
        self._established = False  # links attached at least once
        self.recoveries = 0  # links attached again after a loss (read from any thread)
        self._closing = False
        self._timers: set[Timer] = set()  # scheduled, not yet fired or cancelled
        self._backoff: Iterator[float] = iter(())
        self._reset_backoff()
        self.peer_properties: dict[str, Any] = {}

    # ---------------------------------------------------------------- asyncio side

    def start_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the reactor thread (call once, from the event loop)."""
        self._loop = loop
        self.ready = loop.create_future()
        # Its error may land after wait_ready() gave up (timeout, cancel): mark it seen.
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.ended = loop.create_future()
        self._thread = threading.Thread(target=self._run, name=f"loafer-amqp-{self.label}")
        self._thread.daemon = True
        self._thread.start()

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` to run in the reactor thread (thread-safe, non-blocking)."""
        if self.dead is not None:
            raise ProviderError(f"AMQP reactor thread has stopped: {self.dead}")
        with self._cmd_lock:
            self._cmds.append((fn, args))
            if self._cmd_scheduled:
                return
            self._cmd_scheduled = True
        # One wakeup for every command queued in this loop iteration (e.g. a batch of
        # settlements), not one pipe write each.
        assert self._loop is not None
        self._loop.call_soon(self._trigger)

    def _trigger(self) -> None:
        if self.dead is None:  # the pipe is closed once the reactor has ended
            self._injector.trigger(self._wakeup)

    def _drain_posted(self) -> None:
        with self._post_lock:
            items, self._posted = self._posted, []
            self._post_scheduled = False
        for fn, args in items:
            try:
                fn(*args)
            except Exception:
                logger.exception("%s: error in callback from the reactor", self.label)

    def _ready_result(self, error: BaseException | None) -> None:
        if self.ready is not None and not self.ready.done():
            if error is None:
                self.ready.set_result(None)
            else:
                self.ready.set_exception(error)

    def _thread_ended(self, reason: str) -> None:
        self.dead = reason
        self._close_pipe()  # safe: call() runs in this thread and checks `dead` first
        self.attached = False
        self._ready_result(ProviderError(f"AMQP reactor thread stopped: {reason}"))
        self.on_thread_end(reason)
        if self.ended is not None and not self.ended.done():
            self.ended.set_result(None)

    def on_thread_end(self, reason: str) -> None:
        """Asyncio side: the reactor thread has ended (override to wake waiters)."""

    def _set_attached(self, value: bool) -> None:
        self.attached = value

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the links are attached; raise what went wrong otherwise."""
        assert self.ready is not None
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self.ready)
        except TimeoutError:
            raise ProviderError(
                f"timed out after {timeout}s connecting to {self.settings.display_url}"
            ) from None

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Close the connection and end the reactor thread (idempotent)."""
        if self._thread is None or self.ended is None:
            return
        if self.dead is None:
            with contextlib.suppress(ProviderError):
                self.call(self._begin_shutdown, timeout)
        try:
            async with asyncio.timeout(timeout + 5.0):
                await asyncio.shield(self.ended)
        except TimeoutError:
            logger.error("%s: reactor thread did not stop within %ss", self.label, timeout)
            return
        # `ended` is set by the thread's very last statement: this join is immediate.
        self._thread.join(1.0)

    # ---------------------------------------------------------------- thread plumbing

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Reactor side: run ``fn(*args)`` on the event loop.

        Posts are collected while the reactor works through its events and handed over
        in one batch just before it waits for I/O (:meth:`on_reactor_quiesced`): one
        loop wakeup per burst of messages rather than one per message.
        """
        self._outbox.append((fn, args))

    def _flush_posts(self) -> None:
        """Reactor side: hand the collected posts to the event loop."""
        if not self._outbox:
            return
        items, self._outbox = self._outbox, []
        with self._post_lock:
            self._posted.extend(items)
            if self._post_scheduled:
                return
            self._post_scheduled = True
        assert self._loop is not None
        # RuntimeError: the loop is closed, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._drain_posted)

    def on_reactor_quiesced(self, event: Any) -> None:
        # Dispatched to us when every pending event has been handled (the transport
        # has encoded what they produced), before proton's IO handler waits in select().
        try:
            self.before_wait()
        except Exception:
            logger.exception("%s: error in before_wait", self.label)
        self._flush_posts()

    def before_wait(self) -> None:
        """Reactor side: the reactor is about to wait for I/O (override to act then)."""

    def _run(self) -> None:
        reason = "closed"
        try:
            container = Container(self)
            container.container_id = self.settings.container_id or container.container_id
            self._container = container
            container.selectable(self._injector)
            container.run()
        except BaseException as exc:
            reason = f"{type(exc).__name__}: {exc}"
            logger.critical("%s: AMQP reactor thread died", self.label, exc_info=True)
        finally:
            with contextlib.suppress(Exception):
                self._flush_posts()
            self._abandon_sockets()
            self._release_proton()
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._thread_ended, reason)

    def _release_proton(self) -> None:
        """Reactor side, as the thread ends: let go of every proton object.

        A proton Connection's C object holds its Container (through an attachment record
        pinned by cproton's global table) until the connection is freed, and it is freed
        only once no Python wrapper of it, or of its sessions, links and deliveries, is
        left. Anything of ours still reachable from the Container (a pending timer task,
        its handler after a crash) would therefore keep this client, its owner and the
        whole connection alive forever: drop our side of every such path.
        """
        for timer in list(self._timers):
            timer.discard()
        try:
            self.forget_links()
        except Exception:
            logger.exception("%s: error releasing proton objects", self.label)
        container = self._container
        self._conn = None
        self._session = None
        self._container = None
        if container is not None:
            with contextlib.suppress(Exception):
                container.errors.clear()  # a crash's traceback: frames holding wrappers
            with contextlib.suppress(Exception):
                container.stop_events()  # events left by a crash reference connections
            with contextlib.suppress(Exception):
                # as run() does when it returns (not when it raises): the handler is us,
                # the global handler holds the selector, its sockets and transports
                container.handler = None  # type: ignore[assignment]
                container.global_handler = None  # type: ignore[assignment]

    def forget_links(self) -> None:
        """Reactor side, as the thread ends: drop every link and delivery held."""

    def _abandon_sockets(self) -> None:
        """Close every socket the reactor still holds (it may have died mid-connection).

        A dead reactor's connection would otherwise stay open, and the broker would keep
        sending to its link's credit: messages stuck on a zombie consumer.
        """
        container = self._container
        if container is None:
            return
        try:
            base = getattr(container.global_handler, "base", None)
            selector = getattr(base, "_selector", None)
            for selectable in list(getattr(selector, "_selectables", ())):
                with contextlib.suppress(Exception):
                    selectable.close()
        except Exception:
            logger.exception("%s: error closing the reactor's sockets", self.label)

    def _close_pipe(self) -> None:
        """Close the injector's pipe (event loop thread, once the reactor has ended)."""
        for fd in self._injector.pipe:
            with contextlib.suppress(OSError):
                os.close(fd)

    def on_loafer_wakeup(self, event: Any) -> None:
        with self._cmd_lock:
            items, self._cmds = self._cmds, []
            self._cmd_scheduled = False
        for fn, args in items:
            try:
                fn(*args)
            except Exception:
                logger.exception("%s: error running a command in the reactor", self.label)
        self.after_commands()

    def after_commands(self) -> None:
        """Reactor side: called after each batch of commands (e.g. to top up credit)."""

    def schedule(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Reactor side: run ``callback`` after ``delay`` seconds; ``.cancel()`` to drop it."""
        assert self._container is not None
        timer = Timer(self, callback)
        self._timers.add(timer)
        timer._task = self._container.schedule(delay, timer)
        return timer

    # ---------------------------------------------------------------- connection

    def _reset_backoff(self) -> None:
        self._backoff = delay_iter(
            initial=self.settings.reconnect_initial, max_delay=self.settings.reconnect_max_delay
        )

    def _next_delay(self) -> float:
        return next(self._backoff)

    @guarded
    def on_start(self, event: Any) -> None:
        self._container = event.container
        self._connect()

    def _connect(self) -> None:
        assert self._container is not None
        s = self.settings
        kwargs: dict[str, Any] = {
            "reconnect": False,
            "sasl_enabled": True,
            "allowed_mechs": s.mechanisms(),
            "allow_insecure_mechs": True,
        }
        if s.heartbeat:
            kwargs["heartbeat"] = s.heartbeat
        if s.user is not None:
            kwargs["user"] = s.user
        if s.password is not None:
            kwargs["password"] = s.password
        if s.virtual_host:
            kwargs["virtual_host"] = s.virtual_host
        domain = s.ssl_domain()
        if domain is not None:
            kwargs["ssl_domain"] = domain
        self._conn = self._container.connect(url=s.safe_url, **kwargs)
        self._open_session()

    def _open_session(self) -> None:
        assert self._conn is not None
        self.generation += 1
        session = self._conn.session()
        session.open()
        self._session = session
        assert self._container is not None
        self.open_links(self._container, session)

    def open_links(self, container: Container, session: Any) -> None:
        """Reactor side: create this client's links on ``session``."""
        raise NotImplementedError

    def links_ready(self) -> None:
        """Reactor side: every link is attached (first time or after a recovery)."""

    def generation_lost(self, old_generation: int) -> None:
        """Reactor side: the connection or session of ``old_generation`` is gone."""

    def check_peer(self, properties: dict[str, Any]) -> LoaferError | None:
        """Reactor side: inspect the broker's open properties; return an error to refuse it."""
        return None

    def all_links_attached(self) -> bool:
        """Reactor side: True when every link of the current session is attached."""
        raise NotImplementedError

    def _fail_start(self, error: LoaferError) -> None:
        """Start-up failed: report ``error`` and stop the reactor."""
        self.post(self._ready_result, error)
        self._closing = True
        if self._conn is not None:
            self._conn.close()
        self._stop_reactor()

    def _stop_reactor(self) -> None:
        self._injector.close()
        if self._container is not None:
            self._container.stop()

    def _lost(self, why: str, *, whole_connection: bool) -> None:
        """The current generation died after start-up: drop it and recover with backoff."""
        old = self.generation
        self.generation += 1  # so late events and settlements of the old one are ignored
        self.post(self._set_attached, False)
        self.generation_lost(old)
        delay = self._next_delay()
        if whole_connection:
            self._conn = None
            self._session = None
            logger.warning(
                "%s: connection to %s lost (%s); reconnecting in %.1fs",
                self.label,
                self.settings.display_url,
                why,
                delay,
            )
            self.schedule(delay, self._reconnect)
        else:
            self._session = None
            logger.warning(
                "%s: session ended by the broker (%s); reopening in %.1fs", self.label, why, delay
            )
            self.schedule(delay, self._reopen_session)

    def _reconnect(self) -> None:
        if not self._closing and self._conn is None:
            self._connect()

    def _reopen_session(self) -> None:
        if self._closing or self._conn is None or self._session is not None:
            return
        self._open_session()

    def _current(self, event: Any) -> bool:
        """True when ``event`` is about the live connection/session (not a dead one)."""
        if self._conn is None or event.connection != self._conn:
            return False
        session = event.session
        return session is None or session == self._session

    @guarded
    def on_connection_opened(self, event: Any) -> None:
        if event.connection != self._conn:
            return
        props = event.connection.remote_properties or {}
        self.peer_properties = {str(k): v for k, v in props.items()}
        error = self.check_peer(self.peer_properties)
        if error is not None and not self._established:
            self._fail_start(error)

    @guarded
    def on_link_opened(self, event: Any) -> None:
        if self._closing or not self._current(event):
            return
        link = event.link
        # A refused link is attached with a null terminus, then detached with an error.
        if link.is_receiver and link.remote_source.address is None and not link.source.dynamic:
            return
        if link.is_sender and link.remote_target.address is None:
            return
        if not self.all_links_attached():
            return
        self._reset_backoff()
        if self._established:
            self.recoveries += 1  # counted before the asyncio side can see it attached
        self.post(self._set_attached, True)
        if not self._established:
            self._established = True
            self.post(self._ready_result, None)
        self.links_ready()

    def _endpoint_error(self, what: str, condition: Condition | None, event: Any) -> None:
        text = describe(condition)
        if not self._established:
            name = str(condition.name) if condition is not None else ""
            if name in CONFIG_CONDITIONS:
                self._fail_start(ConfigurationError(f"the broker refused {what}: {text}"))
            else:
                self._fail_start(ProviderError(f"the broker refused {what}: {text}"))
            return
        logger.error("%s: %s closed by the broker: %s", self.label, what, text)
        if event.session is not None:
            event.session.close()
        self._lost(text, whole_connection=False)

    @guarded
    def on_link_error(self, event: Any) -> None:
        if self._closing or not self._current(event):
            return
        self._endpoint_error(self.describe_link(event.link), event.link.remote_condition, event)

    @guarded
    def on_link_closing(self, event: Any) -> None:
        # Detached by the peer without an error: treat like an error (we did not ask).
        if self._closing or not self._current(event):
            return
        self._endpoint_error(self.describe_link(event.link), None, event)

    def describe_link(self, link: Any) -> str:
        """A human description of ``link`` for errors (override for addresses)."""
        return "the link"

    @guarded
    def on_session_error(self, event: Any) -> None:
        if self._closing or not self._current(event):
            return
        self._endpoint_error(
            f"the session for {self.describe_link(None)}", event.session.remote_condition, event
        )

    @guarded
    def on_session_closing(self, event: Any) -> None:
        if self._closing or not self._current(event):
            return
        self._endpoint_error(f"the session for {self.describe_link(None)}", None, event)

    @guarded
    def on_transport_error(self, event: Any) -> None:
        condition = event.transport.condition
        text = describe(condition)
        if self._closing:
            return
        if event.connection is not None and event.connection != self._conn:
            return
        if not self._established:
            name = str(condition.name) if condition is not None else ""
            if name == "amqp:unauthorized-access" or "sasl" in name.lower():
                error: LoaferError = ConfigurationError(
                    f"authentication to {self.settings.display_url} failed: {text}"
                )
            else:
                error = ProviderError(f"cannot connect to {self.settings.display_url}: {text}")
            self._fail_start(error)
            return
        logger.warning("%s: transport error: %s", self.label, text)

    @guarded
    def on_connection_error(self, event: Any) -> None:
        if self._closing or event.connection != self._conn:
            return
        condition = event.connection.remote_condition
        if not self._established:
            name = str(condition.name) if condition is not None else ""
            cls = ConfigurationError if name in CONFIG_CONDITIONS else ProviderError
            self._fail_start(cls(f"the broker closed the connection: {describe(condition)}"))
            return
        # proton closes our end next; the transport then closes without on_disconnected.
        self._lost(describe(condition), whole_connection=True)

    @guarded
    def on_connection_closing(self, event: Any) -> None:
        if self._closing or event.connection != self._conn:
            return
        if not self._established:
            self._fail_start(ProviderError("the broker closed the connection during start-up"))
            return
        self._lost("closed by the broker", whole_connection=True)

    @guarded
    def on_disconnected(self, event: Any) -> None:
        if self._closing:
            self._stop_reactor()
            return
        if event.connection != self._conn:
            return
        if not self._established:
            self._fail_start(
                ProviderError(f"connection to {self.settings.display_url} lost during start-up")
            )
            return
        self._lost("transport closed", whole_connection=True)

    @guarded
    def on_connection_closed(self, event: Any) -> None:
        if self._closing:
            self._stop_reactor()

    @guarded
    def on_transport_closed(self, event: Any) -> None:
        # Closing and the socket is gone (possibly before the broker answered our close).
        if self._closing:
            self._stop_reactor()

    # ---------------------------------------------------------------- shutdown

    def _begin_shutdown(self, timeout: float) -> None:
        if self._closing:
            return
        self.before_shutdown()
        self._closing = True
        self.post(self._set_attached, False)
        conn = self._conn
        if conn is not None and not conn.state & Endpoint.REMOTE_UNINIT:
            conn.close()
            # Give the broker ``timeout`` to answer our close; then stop regardless.
            self.schedule(timeout, self._stop_reactor)
        else:
            # Not connected, or the peer has not even answered our open (a hung broker,
            # or a server that is not AMQP): nobody will answer a close either.
            self._stop_reactor()

    def before_shutdown(self) -> None:
        """Reactor side: last chance to settle/release before the connection closes."""
