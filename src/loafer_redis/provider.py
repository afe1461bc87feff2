"""Redis Streams provider for loafer-core, built on redis-py's asyncio client.

One consumer group of one stream. Each provider is its own consumer of the group, with
a name unique to the process and the provider. A reader task fills a buffer bounded by
the route's free capacity with ``XREADGROUP ... COUNT n BLOCK ms`` on a connection of
its own, and reclaims (a Lua script over ``XPENDING ... IDLE`` and ``XCLAIM``) entries
whose lease lapsed (a consumer that died), entries parked by a RETRY or a RELEASE, and
delayed retries now due; ``fetch`` hands the buffer out.

The stream is never written to: it belongs to its producers and to every consumer group
reading it. (The one exception is what producers asked for: while started, the provider
also adds to the stream the messages a ``RedisPublisher`` scheduled with a delay in
``<stream>:scheduled``, once due: see ``loafer_redis._scheduled``.) Outcome mapping
(see ``docs/providers/redis.md``):

- ``ACCEPT`` -> ``XACK`` (coalesced: one ``XACK`` per two turns of the event loop, on a
  connection of its own).
- ``RETRY()`` -> the entry stays in the group's pending list, handed to the group's
  parked consumer (``x-loafer-parked``) with an idle time older than any lease: the next
  reclaim of any consumer of the group takes it, and its ``XCLAIM`` counts the delivery.
- ``RETRY(delay)`` -> parked the same way, and its id waits in the group's sorted set
  (``<stream>:<group>:delayed``) scored by when it is due; reclaims skip it until then.
- ``REJECT(reason)`` -> the entry is added to the dead-letter stream (``<stream>:dead``)
  with the reason, and acknowledged, in one script; with ``dead_letter=False`` only
  acknowledged (logged at ERROR).
- ``RELEASE`` -> parked like a RETRY, its delivery count lowered by one (``RETRYCOUNT``)
  so that the reclaim's count gives it back: not counted. Buffered entries given back
  at a drain, and at ``close`` every entry still pending for this consumer, are
  released the same way.

Every settlement but ACCEPT first checks the entry is still pending for this consumer:
one whose lease lapsed and that another consumer took is not settled twice, and a
delivery settled twice is parked once. The attempt number is the entry's delivery count
(plus the ``x-loafer-attempt`` field, less one, on the copies earlier versions re-added).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio
import redis.exceptions

from loafer_core.errors import ConfigurationError, LoaferError, ProviderError
from loafer_core.outcome import Outcome, OutcomeKind
from loafer_core.provider import Capabilities, Delivery, Description, Support
from loafer_redis import _describe, _scheduled
from loafer_redis._connection import BlockingReader, DirectConnection, open_client
from loafer_redis._dead_letters import RedisDeadLetters, reject_fields
from loafer_redis._resp import pack
from loafer_redis._scripts import Scripts
from loafer_redis._settlement import Acks, Batch, Entry
from loafer_redis.errors import is_no_group, mask_url, operation_error, protect, scrub
from loafer_redis.settings import BODY_FIELD, DEFAULT_URL, RedisSettings, settings_from
from loafer_redis.translator import RedisTranslator

__all__ = [
    "ATTEMPT_FIELD",
    "BODY_FIELD",
    "DEFAULT_URL",
    "GROUP_FIELD",
    "PARKED_CONSUMER",
    "REJECTED_FROM_FIELD",
    "REJECTED_ID_FIELD",
    "REJECT_REASON_FIELD",
    "RedisProvider",
]

logger = logging.getLogger("loafer_redis")

ATTEMPT_FIELD = "x-loafer-attempt"
"""The attempt number of the first delivery of an entry re-added by an earlier version
(this one re-adds nothing: the delivery count is the attempt)."""
#: The consumer group an entry re-added by an earlier version is for (other loafer
#: groups skip it).
GROUP_FIELD = "x-loafer-group"
#: The group's consumer that holds the entries parked by a RETRY or a RELEASE.
PARKED_CONSUMER = "x-loafer-parked"
REJECT_REASON_FIELD = "x-loafer-reject-reason"
"""Field of a dead-lettered entry: why it was rejected (see also the fields below)."""
#: Fields of a dead-lettered entry: the stream and id it came from.
REJECTED_FROM_FIELD = "x-loafer-rejected-from"
REJECTED_ID_FIELD = "x-loafer-rejected-id"

_ATTEMPT = ATTEMPT_FIELD.encode()
_GROUP = GROUP_FIELD.encode()
#: Redis 6.2 brought XPENDING's IDLE and consumer filters.
_MIN_VERSION = (6, 2)
#: Most entries released (or pages of our own pending entries read) per call.
_PAGE = 500
#: Most pending entries one reclaim looks at (delayed retries not yet due are skipped).
_SCAN = 1000


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def consumer_name(prefix: str) -> str:
    """A consumer name unique to this process and this call: ``prefix-host-pid-random``."""
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


_CONTROL = frozenset({ATTEMPT_FIELD, GROUP_FIELD})


def _fields(headers: Mapping[str, Any]) -> dict[str, Any]:
    """An entry without a body field, as its fields (loafer's own control fields left
    out: they are in the headers)."""
    return {k: v for k, v in headers.items() if k not in _CONTROL}


class RedisProvider:
    """Consume one Redis stream through a consumer group, at least once.

    Takes one :class:`~loafer_redis.settings.RedisSettings`, or the same values as flat
    keywords (its :attr:`~loafer_redis.settings.RedisSettings.flat` names):
    ``RedisProvider(RedisSettings(stream="orders", group=ConsumerGroup(name="billing")))``
    is ``RedisProvider("orders", group="billing")``. The settings are documented there:
    the stream, the connection (``url``: the password never appears in logs, errors or
    reprs), the timeouts, the consumer group and this consumer (lease, reclaims,
    forgetting idle consumers), delayed retries, dead letters, the body field and the
    pool's size. ``settings`` holds them; ``stream``, ``group``, ``url`` (masked),
    ``delayed_key``, ``dead_letter_stream`` and ``body_field`` are read from them.
    """

    default_translator = RedisTranslator()
    settings_type = RedisSettings

    def __init__(self, settings: RedisSettings | str | None = None, /, **options: Any) -> None:
        self.settings = settings_from(RedisSettings, "RedisProvider", settings, options)
        self._configure(self.settings)
        self._init_state()

    def _configure(self, settings: RedisSettings) -> None:
        """The values the provider's paths read, taken from ``settings`` once."""
        protect(settings.connection.url)
        group, timeouts, dead = settings.group, settings.timeouts, settings.dead_letters
        self.stream = stream = settings.stream
        self.group = group.name
        self._url = settings.connection.url
        self._create = bool(group.create)
        self._group_start = group.start
        self._consumer_prefix = group.consumer
        self._lease = float(group.lease)
        self._reclaim_interval = float(group.reclaim_interval)
        self._forget_after = None if group.forget_after is None else float(group.forget_after)
        self._block = float(timeouts.poll)
        self._socket_timeout = float(timeouts.call)
        self._connect_timeout = float(timeouts.connect)
        self._close_timeout = float(timeouts.close)
        self._delayed_retry = bool(settings.retries.enabled)
        self.delayed_key = settings.retries.key or f"{stream}:{group.name}:delayed"
        # where earlier versions parked their delayed copies (moved out once, see start)
        self._legacy_delayed_key = f"{stream}:delayed"
        self.dead_letter_stream: str | None = None
        if dead.stream is True:
            self.dead_letter_stream = f"{stream}:dead"
        elif isinstance(dead.stream, str):
            self.dead_letter_stream = dead.stream
        self._dead_letter_maxlen = dead.maxlen or 0
        self.body_field = settings.body_field
        # None matches no field name: every entry goes to _delivery, as its fields
        self._body: bytes | None = None if self.body_field is None else self.body_field.encode()
        self._max_connections = settings.max_connections
        self._connection_options = dict(settings.connection.options or {})

    def _init_state(self) -> None:
        """The state of a provider not started yet."""
        #: this consumer's name in the group (set at start)
        self.consumer: str | None = None
        self._last_forget = time.monotonic()
        self._client: redis.asyncio.Redis | None = None
        self._scheduled: _scheduled.Mover | None = None
        self._scripts: Scripts | None = None
        self._reader: BlockingReader | None = None
        self._acker: DirectConnection | None = None  # the XACKs' own connection
        self._read_commands: dict[int, bytes] = {}  # XREADGROUP packed, by COUNT
        self._capacity = 1
        self._read_batch = 1
        self._started = False
        self._closed = False
        self._paused = False
        # entries read and not handed out yet: (id, fields, delivery count)
        self._buffer: deque[tuple[bytes, list[bytes], int]] = deque()
        # handed out and not settled: id -> token
        self._outstanding: dict[bytes, Entry] = {}
        self._reading: asyncio.Task[None] | None = None
        self._mover: asyncio.Task[None] | None = None  # legacy delayed copies, if any
        self._due_at: float | None = None  # when the next delayed retry is due (monotonic)
        self._wake_reader = asyncio.Event()
        self._filled = asyncio.Event()
        self._error: BaseException | None = None
        self._waiting = 0  # fetches waiting on an empty buffer
        self._want = 1  # what the last waiting fetch asked for
        self._last_reclaim = 0.0
        self._reclaim_now = True
        self._cursor = b"0-0"
        self._recover = False  # a read's reply may have been lost: look at our PEL
        self._acks: Acks | None = None
        # the reader is on its way to a read: queued XACKs go with it (one write)
        self._riding = False
        self._releases: Batch[bytes] | None = None
        self._warned_no_delay = False
        self._reader_lock = asyncio.Lock()

    # -- description ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The Redis URL with its password masked."""
        return mask_url(self._url)

    @property
    def address(self) -> str:
        """The stream's key: the destination the tracing middleware names a delivery's
        consumer span by (``process <stream>``, ``messaging.destination.name``)."""
        return self.stream

    def describe(self) -> str:
        """A short description for logs (no secrets)."""
        return f"redis stream {self.stream!r} group {self.group!r}"

    def description(self) -> Description:
        """The stream and group, the server (no secret) and loafer's AsyncAPI extension:
        see :class:`~loafer_core.provider.Describable`."""
        return _describe.provider(self.url, self.stream, self.group, self.dead_letter_stream)

    def __repr__(self) -> str:
        return f"RedisProvider(stream={self.stream!r}, group={self.group!r}, url={self.url!r})"

    @property
    def capabilities(self) -> Capabilities:
        """Delayed retry (a sorted set of the group's pending ids), dead-lettering (a
        stream), attempts counted (Redis's delivery count), uncounted RELEASE (the count
        lowered by one with ``RETRYCOUNT``), lease extension (``XCLAIM ... JUSTID``); no
        ordering keys."""
        return Capabilities(
            delayed_retry=Support.EMULATED if self._delayed_retry else Support.NONE,
            dead_letter=Support.EMULATED if self.dead_letter_stream else Support.NONE,
            attempt_count=Support.NATIVE,
            release_uncounted=Support.EMULATED,
            ordering_keys=Support.NONE,
            lease_extension=Support.NATIVE,
        )

    @property
    def lease_duration(self) -> float:
        """Seconds an entry stays leased after delivery or extension."""
        return self._lease

    # -- start-up and checks --------------------------------------------------------------

    def _open(self) -> redis.asyncio.Redis:
        return open_client(
            self._url,
            socket_timeout=self._socket_timeout,
            connect_timeout=self._connect_timeout,
            max_connections=self._max_connections,
            options=self._connection_options,
        )

    async def _check(
        self, client: redis.asyncio.Redis, *, create: bool, dry_run: bool = False
    ) -> None:
        """Connect, check the server's version and that the stream and group exist
        (creating them when ``create``, unless ``dry_run``: then missing is fine)."""
        try:
            async with asyncio.timeout(self._connect_timeout + self._socket_timeout):
                info = await client.info("server")
                version = str(info.get("redis_version", "0"))
                if _version(version) < _MIN_VERSION:
                    raise ConfigurationError(
                        f"{self.describe()}: Redis {version} at {self.url} is too old; "
                        "loafer_redis needs Redis 6.2 or later (XPENDING ... IDLE), or Valkey"
                    )
                groups = await self._groups(client)
                if groups is None or self.group not in groups:
                    if not create:
                        raise self._missing(groups is None)
                    if dry_run:
                        return
                    try:
                        await client.xgroup_create(
                            self.stream, self.group, id=self._group_start, mkstream=True
                        )
                    except redis.exceptions.ResponseError as exc:
                        if not str(exc).startswith("BUSYGROUP"):
                            raise
        except LoaferError:
            raise
        except TimeoutError:
            raise ProviderError(
                f"{self.describe()}: Redis at {self.url} did not answer in time"
            ) from None
        except Exception as exc:
            raise operation_error(f"checking {self.describe()}", exc, self._url) from None

    async def _groups(self, client: redis.asyncio.Redis) -> dict[str, Mapping[Any, Any]] | None:
        """The stream's groups by name, or None when the stream does not exist."""
        try:
            groups = await client.xinfo_groups(self.stream)
        except redis.exceptions.ResponseError as exc:
            if "no such key" in str(exc).lower():
                return None
            raise
        out: dict[str, Mapping[Any, Any]] = {}
        for group in groups:
            name = group.get("name")
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            out[str(name)] = group
        return out

    def _missing(self, no_stream: bool) -> ConfigurationError:
        what = (
            f"stream {self.stream!r} does not exist"
            if no_stream
            else (f"stream {self.stream!r} has no consumer group {self.group!r}")
        )
        return ConfigurationError(
            f"{self.describe()} at {self.url}: the {what}; create it with "
            f"`XGROUP CREATE {self.stream} {self.group} 0 MKSTREAM`, or pass create=True"
        )

    async def verify(self) -> None:
        """Check the set-up as ``start`` would, consuming and creating nothing.

        On a client of its own, closed before it returns: the server answers (with the
        URL's credentials), is Redis 6.2+ or Valkey, and the stream and group exist
        (with ``create=True`` missing ones are fine: ``start`` creates them; nothing is
        created here).
        ConfigurationError for what is wrong, ProviderError when Redis cannot be reached.
        """
        client = self._open()
        try:
            try:
                await self._check(client, create=self._create, dry_run=True)
            finally:
                await self._close_client(client)
        except (LoaferError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise operation_error(f"verifying {self.describe()}", exc, self._url) from None

    async def start(self, capacity: int) -> None:
        """Connect, check (or create) the stream and group, and pick a consumer name."""
        if self._closed:
            raise ConfigurationError(
                f"{self.describe()}: provider already closed; create a new one"
            )
        if self._started:
            return
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigurationError(
                f"RedisProvider.start: capacity must be >= 1, got {capacity!r}"
            )
        self._capacity = capacity
        #: read ahead once this many slots are free (fewer, larger reads)
        self._read_batch = max(1, capacity // 4)
        client = self._open()
        try:
            await self._check(client, create=self._create)
        except BaseException:
            await self._close_client(client)
            raise
        self._client = client
        self._scripts = Scripts(client)
        self._reader = BlockingReader(client, socket_timeout=self._socket_timeout)
        self._acker = DirectConnection(client, socket_timeout=self._socket_timeout)
        self.consumer = consumer_name(self._consumer_prefix)
        self._read_commands = {}
        self._acks = Acks(self._send_acks, limit=1000, held=self._acks_ride)
        self._releases = Batch(self._send_releases, limit=_PAGE)
        self._started = True
        await self._start_legacy_mover(client)
        # messages published with a delay (<stream>:scheduled): added to the stream when due
        self._scheduled = _scheduled.Mover(
            client, what=self.describe(), url=self._url, keep_polling=True
        )
        self._scheduled.watch(self.stream)
        logger.info(
            "%s: consuming as %s from %s (lease %ss)",
            self.describe(),
            self.consumer,
            self.url,
            self._lease,
        )

    # -- reading --------------------------------------------------------------------------

    def _room(self) -> int:
        return self._capacity - len(self._outstanding) - len(self._buffer)

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        """Return up to ``max_messages`` entries, waiting up to ``block`` when none are
        buffered.

        The reader task reads ahead into a buffer bounded by the route's free capacity.
        Cancelling a fetch loses nothing: what the reader receives stays buffered for the
        next fetch, or is released at ``stop_fetching``/``close``.
        """
        if not self._started:
            raise ProviderError(f"{self.describe()}: fetch before start")
        if self._closed or max_messages < 1:
            return []
        if self._paused:
            self._paused = False
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if not self._buffer:
            self._ensure_reader()
            # the dispatcher's free capacity: what a waiting fetch may have read for it
            # even if deliveries it gave up settling still count as outstanding here
            self._want = max_messages
            self._filled.clear()
            self._wake_reader.set()
            self._waiting += 1
            try:
                async with asyncio.timeout(self._block + self._socket_timeout + 1.0):
                    await self._filled.wait()
            except TimeoutError:
                return []
            finally:
                self._waiting -= 1
            if self._error is not None:
                error, self._error = self._error, None
                raise error
        out = self._take(max_messages)
        if self._room() > 0:
            self._wake_reader.set()  # read ahead while these are handled
        return out

    def _take(self, limit: int) -> list[Delivery]:
        buffer = self._buffer
        out: list[Delivery] = []
        append = out.append
        outstanding = self._outstanding
        body_name = self._body
        stream, group, consumer = self.stream, self.group, self.consumer
        while buffer and len(out) < limit:
            entry_id, fields, count = buffer.popleft()
            if len(fields) == 2 and fields[0] == body_name:
                # the usual entry, a body and nothing else: built here, positionally
                # (raw, body, message_id, metadata, attempt, ordering_key, token)
                message_id = entry_id.decode()
                body = fields[1]
                token = Entry(entry_id)
                metadata: dict[str, Any] = {
                    "headers": {},
                    "message_id": message_id,
                    "attempt": count,
                    "queue": stream,
                    "stream": stream,
                    "group": group,
                    "consumer": consumer,
                    "delivery_count": count,
                }
                append(Delivery(body, body, message_id, metadata, count, None, token))
                outstanding[entry_id] = token
                continue
            delivery = self._delivery(entry_id, fields, count)
            if delivery is not None:
                outstanding[entry_id] = delivery.token
                append(delivery)
        return out

    def _delivery(self, entry_id: bytes, fields: list[bytes], count: int) -> Delivery | None:
        body: bytes | None = None
        headers: dict[str, Any] = {}
        base = 1
        body_name = self._body
        if len(fields) == 2 and fields[0] == body_name:
            body = fields[1]  # the usual entry: a body and nothing else
            fields = []
        it = iter(fields)
        for name, value in zip(it, it, strict=False):
            if name == body_name:
                body = value
                continue
            key = name.decode("utf-8", "replace")
            try:
                headers[key] = value.decode("utf-8")
            except UnicodeDecodeError:
                headers[key] = value
            if name == _ATTEMPT:
                try:
                    base = max(1, int(value))
                except ValueError:
                    base = 1
            elif name == _GROUP and value.decode("utf-8", "replace") != self.group:
                # a copy re-added for another group of this stream: not ours to handle
                assert self._acks is not None
                self._acks.add(entry_id)
                return None
        message_id = entry_id.decode()
        attempt = base + count - 1
        metadata = {
            "headers": headers,
            "message_id": message_id,
            "attempt": attempt,
            "queue": self.stream,
            "stream": self.stream,
            "group": self.group,
            "consumer": self.consumer,
            "delivery_count": count,
        }
        raw: Any = body if body is not None else _fields(headers)
        return Delivery(
            raw=raw,
            body=raw,
            message_id=message_id,
            metadata=metadata,
            attempt=attempt,
            token=Entry(entry_id),
        )

    def _ensure_reader(self) -> None:
        task = self._reading
        if task is None or task.done():
            self._reading = asyncio.get_running_loop().create_task(
                self._read_loop(), name=f"loafer:{self.stream}:reader"
            )

    def _acks_ride(self) -> bool:
        return self._riding

    def _ride_off(self) -> None:
        """The reader goes without the queued XACKs: they are sent on their own."""
        if self._riding:
            self._riding = False
            if self._acks is not None:
                self._acks.resume()

    async def _read_loop(self) -> None:
        """Fill the buffer while there is room and someone fetches; one cycle at a time."""
        try:
            await self._read_until_stopped()
        finally:
            self._ride_off()

    async def _read_until_stopped(self) -> None:
        failures = 0
        while not self._closed and not self._paused:
            room = self._room()
            if self._waiting:
                room = max(room, min(self._want, self._capacity) - len(self._buffer))
            if room <= 0 or (self._buffer and not self._waiting and room < self._read_batch):
                await self._park()
                continue
            try:
                got = await self._cycle(room)
            except ConfigurationError as exc:
                self._error = exc
                self._filled.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._error = (
                    exc
                    if isinstance(exc, ProviderError)
                    else operation_error(f"reading {self.describe()}", exc, self._url)
                )
                self._filled.set()
                # the fetch raises it and the dispatcher backs off; wait for its next fetch
                await self._park()
                continue
            failures = 0
            self._buffer.extend(got)
            self._filled.set()
            if not got and not self._waiting:
                # an empty wait and no fetch waiting: rest until one comes
                await self._park()
        del failures

    async def _park(self) -> None:
        """The reader rests until woken (a fetch, room freed, a drain), unless stopping."""
        self._ride_off()
        if self._paused or self._closed:
            return
        self._wake_reader.clear()
        await self._wake_reader.wait()
        # the XACKs queued from now on go with the next read (see _read_new), unless
        # the reader parks again first (then _ride_off sends them on their own)
        self._riding = True
        # let the settles of this turn land first (handlers that never wait settle a
        # whole fetched batch within a turn or two): one larger read rather than several
        await asyncio.sleep(0)

    async def _cycle(self, room: int) -> list[tuple[bytes, list[bytes], int]]:
        """One read: lapsed leases first when a reclaim is due, else new entries."""
        if self._recover:
            await self._recover_lost()
        now = time.monotonic()
        if self._forget_after is not None and now - self._last_forget >= min(
            60.0, self._forget_after
        ):
            self._last_forget = now
            await self._forget_idle_consumers()
        due = self._due_at
        if (
            self._reclaim_now
            or now - self._last_reclaim >= self._reclaim_interval
            or (due is not None and now >= due)
        ):
            self._reclaim_now = False
            got = await self._reclaim(room)
            if got:
                return got
        if self._paused or self._closed:
            return []
        return await self._read_new(room)

    async def _reclaim(self, count: int) -> list[tuple[bytes, list[bytes], int]]:
        """Claim up to ``count`` entries for this consumer: delayed retries now due, then
        entries idle past the lease (a dead consumer's, and those parked by a RETRY or a
        RELEASE), skipping delayed retries not yet due. Each claim counts a delivery."""
        assert self._scripts is not None
        try:
            async with asyncio.timeout(self._socket_timeout):
                cursor, entries, wait_ms = await self._scripts.reclaim(
                    keys=[self.stream, self.delayed_key],
                    args=[
                        self.group,
                        self.consumer,
                        int(self._lease * 1000),
                        self._cursor,
                        count,
                        _SCAN,
                        PARKED_CONSUMER,
                    ],
                )
        except redis.exceptions.ResponseError as exc:
            if is_no_group(exc):
                raise await self._gone() from None
            raise
        now = time.monotonic()
        wait_ms = int(wait_ms)
        self._due_at = None if wait_ms < 0 else now + wait_ms / 1000
        self._cursor = cursor
        if cursor == b"0-0":
            self._last_reclaim = now
        got = [(e[0], e[1], int(e[2])) for e in entries]
        if got:
            logger.debug("%s: reclaimed %d entries", self.describe(), len(got))
        return got

    async def _forget_idle_consumers(self) -> None:
        """Delete the group's consumers idle past ``forget_consumers_after`` with nothing
        pending (atomically checked: never one with pending entries). Best effort."""
        assert self._client is not None and self._scripts is not None
        limit_ms = (self._forget_after or 0) * 1000
        try:
            async with asyncio.timeout(self._socket_timeout):
                consumers = await self._client.xinfo_consumers(self.stream, self.group)
                for consumer in consumers:
                    name = consumer.get("name")
                    if isinstance(name, bytes):
                        name = name.decode("utf-8", "replace")
                    if (
                        name == self.consumer
                        or consumer.get("pending")
                        or int(consumer.get("idle") or 0) < limit_ms
                    ):
                        continue
                    if await self._scripts.forget_consumer(
                        keys=[self.stream], args=[self.group, name]
                    ):
                        logger.info(
                            "%s: deleted consumer %s from the group (idle, nothing pending)",
                            self.describe(),
                            name,
                        )
        except Exception as exc:  # a cancellation passes through
            logger.debug(
                "%s: looking for idle consumers failed: %s",
                self.describe(),
                scrub(f"{type(exc).__name__}: {exc}", self._url),
            )

    async def _gone(self) -> LoaferError:
        """The stream or group vanished (deleted, or a Redis restarted without
        persistence). With ``create=True`` they are created again (a ProviderError: the
        dispatcher tries again); otherwise a ConfigurationError."""
        if self._create and self._client is not None:
            try:
                async with asyncio.timeout(self._socket_timeout):
                    await self._client.xgroup_create(
                        self.stream, self.group, id=self._group_start, mkstream=True
                    )
            except Exception as exc:  # BUSYGROUP: another consumer made it meanwhile
                if "BUSYGROUP" not in str(exc):
                    return operation_error(f"creating {self.describe()} again", exc, self._url)
            logger.warning(
                "%s: the stream or its consumer group was gone; created it again "
                "(create=True). Entries pending before are lost with the group",
                self.describe(),
            )
            return ProviderError(f"{self.describe()}: the consumer group was created again")
        return ConfigurationError(
            f"{self.describe()} at {self.url}: the stream or its consumer group no longer "
            f"exists (NOGROUP); create it with `XGROUP CREATE {self.stream} {self.group} 0 "
            "MKSTREAM`, or pass create=True"
        )

    async def _read_new(self, count: int) -> list[tuple[bytes, list[bytes], int]]:
        reader = self._reader
        assert reader is not None
        due = self._due_at
        if due is not None and due - time.monotonic() < self._block:
            # a delayed retry is due before the read would end: wait no longer than that
            command = self._pack_read(count, max(1, int((due - time.monotonic()) * 1000) + 1))
        else:
            # packed once per COUNT (at most ``capacity`` of them)
            command = self._read_commands.get(count) or self._pack_read(count, None)
        acks: list[bytes] = []
        if self._riding:
            self._riding = False
            if self._acks is not None:
                acks = self._acks.take()
        before = b""
        answered: list[bool] = []

        def on_ack(reply: Any) -> None:
            answered.append(True)
            self._acks_answered(acks, reply)

        if acks:
            before = pack(("XACK", self.stream, self.group, *acks))
        try:
            reply = await reader.read(command, self._block, before, on_ack if acks else None)
        except redis.exceptions.ResponseError as exc:
            if is_no_group(exc):
                raise await self._gone() from None
            raise
        except BaseException:
            self._lost_reply(acks, answered)
            raise
        if not reply:
            return []
        out: list[tuple[bytes, list[bytes], int]] = []
        # RESP3 answers a map of stream -> entries, RESP2 a list of pairs
        streams = reply.values() if isinstance(reply, dict) else (e for _, e in reply)
        for entries in streams:
            for entry_id, fields in entries:
                if fields is None:
                    continue
                out.append((entry_id, fields, 1))
        return out

    def _pack_read(self, count: int, block_ms: int | None) -> bytes:
        """``XREADGROUP`` for ``count`` new entries, packed: blocking ``block_ms``, or
        ``None`` for ``block`` (then kept for the next reads of that COUNT)."""
        assert self.consumer is not None
        command = pack(
            (
                "XREADGROUP",
                "GROUP",
                self.group,
                self.consumer,
                "COUNT",
                count,
                "BLOCK",
                max(1, int(self._block * 1000)) if block_ms is None else block_ms,
                "STREAMS",
                self.stream,
                ">",
            )
        )
        if block_ms is None:
            self._read_commands[count] = command
        return command

    def _lost_reply(self, acks: list[bytes], answered: list[bool]) -> None:
        """The connection was dropped with the read unanswered: Redis may have given us
        entries whose reply is lost; they are pending for us, released once back. The
        XACKs sent with it and not answered are queued again (applied or not: XACK is
        idempotent)."""
        self._recover = True
        if acks and not answered and self._acks is not None:
            self._acks.add_many(acks)

    def _acks_answered(self, acks: list[bytes], reply: Any) -> None:
        """The XACK sent with a read was answered: an error reply queues them again
        (sent on their own, with their retries and warning)."""
        if not isinstance(reply, Exception):
            self._acked(len(acks))
        elif self._acks is not None:
            self._acks.add_many(acks)

    def _acked(self, count: int) -> None:
        """Called once Redis answered an XACK of ``count`` entries (for instrumentation:
        the benchmark counts them here)."""

    async def _recover_lost(self) -> None:
        """After a read whose reply was lost: release entries pending for this consumer
        that it does not hold (they were never handed out)."""
        if self._acks is not None:
            await self._acks.flush()  # handled ones whose XACK is still queued are not lost
        held = set(self._outstanding) | {entry_id for entry_id, _, _ in self._buffer}
        mine = await self._own_pending()
        lost = [entry_id for entry_id in mine if entry_id not in held]
        if lost:
            await self._requeue(lost, 0)
            logger.info(
                "%s: released %d entries whose read reply was lost", self.describe(), len(lost)
            )
        self._recover = False

    async def _own_pending(self) -> list[bytes]:
        assert self._client is not None
        ids: list[bytes] = []
        start: bytes | str = "-"
        while True:
            async with asyncio.timeout(self._socket_timeout):
                page = await self._client.xpending_range(
                    self.stream, self.group, start, "+", _PAGE, consumername=self.consumer
                )
            for item in page:
                entry_id = item["message_id"]  # bytes: the client does not decode
                assert isinstance(entry_id, bytes)
                ids.append(entry_id)
            if len(page) < _PAGE:
                return ids
            start = b"(" + ids[-1]

    # -- settling -------------------------------------------------------------------------

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Settle one delivery (see the module docstring). A second settle of the same
        delivery is ignored; ACCEPT is queued (sent within a turn of the event loop,
        flushed by ``close``). Broker failures raise ProviderError (the delivery stays
        pending: safe to settle again)."""
        token = delivery.token
        if not isinstance(token, Entry):
            raise ProviderError(f"{self.describe()}: {delivery!r} was not fetched from Redis")
        if token.settled:
            logger.debug("%s: %r settled twice; %r ignored", self.describe(), delivery, outcome)
            return
        if not self._started:
            raise ProviderError(f"{self.describe()}: settle before start")
        kind = outcome.kind
        if kind is OutcomeKind.ACCEPT:  # the hot path: _forget inlined
            token.settled = True
            entry_id = token.id
            outstanding = self._outstanding
            outstanding.pop(entry_id, None)
            wake = self._wake_reader
            if not wake.is_set() and (
                self._waiting
                or self._capacity - len(outstanding) - len(self._buffer) >= self._read_batch
            ):
                wake.set()
            assert self._acks is not None
            self._acks.add(entry_id)
            return
        try:
            if kind is OutcomeKind.RELEASE:
                assert self._releases is not None
                await self._releases.add(token.id)
            elif kind is OutcomeKind.RETRY:
                await self._retry(delivery, token, outcome.delay)
            else:
                await self._reject(delivery, token, outcome.reason or "rejected")
        except asyncio.CancelledError:
            raise
        except redis.exceptions.ResponseError as exc:
            if is_no_group(exc):
                raise await self._gone() from None
            raise operation_error(
                f"settling message {delivery.message_id} with {outcome!r}", exc, self._url
            ) from None
        except Exception as exc:
            raise operation_error(
                f"settling message {delivery.message_id} with {outcome!r}", exc, self._url
            ) from None
        token.settled = True
        self._forget(token)

    def _forget(self, token: Entry) -> None:
        outstanding = self._outstanding
        outstanding.pop(token.id, None)
        wake = self._wake_reader
        if not wake.is_set() and (
            self._waiting
            or self._capacity - len(outstanding) - len(self._buffer) >= self._read_batch
        ):
            wake.set()

    async def _retry(self, delivery: Delivery, token: Entry, delay: float | None) -> None:
        assert self._scripts is not None
        if delay and not self._delayed_retry:
            if not self._warned_no_delay:
                self._warned_no_delay = True
                logger.warning(
                    "%s: RETRY(delay=%s) asked, but delayed retries are disabled "
                    "(delayed_retry=False); retrying at once",
                    self.describe(),
                    delay,
                )
            delay = None
        if not delay:
            done = await self._requeue([token.id], 1)
        else:
            delay_ms = max(1, round(delay * 1000))
            async with asyncio.timeout(self._socket_timeout):
                done = await self._scripts.retry_later(
                    keys=[self.stream, self.delayed_key],
                    args=[self.group, self.consumer, PARKED_CONSUMER, delay_ms, token.id],
                )
            if done[0]:
                due = time.monotonic() + delay_ms / 1000
                if self._due_at is None or due < self._due_at:
                    self._due_at = due  # the reader reclaims it when due
        self._note(done, delivery, "retried")

    async def _reject(self, delivery: Delivery, token: Entry, reason: str) -> None:
        assert self._scripts is not None
        dead = self.dead_letter_stream
        if dead is None:
            logger.error(
                "%s: message %s rejected (%s) and acknowledged: no dead-letter stream "
                "(dead_letter=False)",
                self.describe(),
                delivery.message_id,
                reason,
            )
            assert self._client is not None
            async with asyncio.timeout(self._socket_timeout):
                await self._client.xack(self.stream, self.group, token.id)
            return
        async with asyncio.timeout(self._socket_timeout):
            done = await self._scripts.reject(
                keys=[self.stream, dead],
                args=[
                    self.group,
                    self.consumer,
                    token.id,
                    self._dead_letter_maxlen,
                    *reject_fields(
                        delivery,
                        self.stream,
                        reason,
                        (REJECT_REASON_FIELD, REJECTED_FROM_FIELD, REJECTED_ID_FIELD),
                        GROUP_FIELD,
                    ),
                ],
            )
        self._note(done, delivery, "dead-lettered")

    def dead_letter_store(self) -> RedisDeadLetters:
        """The dead-letter stream's store (:class:`~loafer_core.deadletters.HasDeadLetters`):
        a replay adds each entry back to the stream and deletes it from the dead-letter
        stream in one script (exactly once). ConfigurationError with ``dead_letter=False``."""
        if self.dead_letter_stream is None:
            raise ConfigurationError(
                f"{self.describe()}: dead letters are off (dead_letter=False): nothing to read"
            )
        return RedisDeadLetters(
            self._url, self.stream, self.dead_letter_stream, self.body_field, self._socket_timeout
        )

    def _note(self, done: Sequence[int], delivery: Delivery, what: str) -> None:
        """Log a settlement that did nothing: ``done`` is ``[done, not ours, gone]``."""
        if done[1]:
            logger.warning(
                "%s: message %s was not %s: it is no longer pending for this consumer "
                "(its lease lapsed and another consumer took it, or it was settled already)",
                self.describe(),
                delivery.message_id,
                what,
            )
        elif done[2]:
            logger.warning(
                "%s: message %s was not %s: the entry is gone from the stream (trimmed or "
                "deleted); acknowledged",
                self.describe(),
                delivery.message_id,
                what,
            )

    async def _send_acks(self, ids: Sequence[bytes]) -> None:
        """XACK a batch, retrying twice; past that the entries stay pending (reclaimed
        when their lease lapses: a redelivery, never a loss)."""
        acker = self._acker
        if self._client is None or acker is None:
            return
        command = pack(("XACK", self.stream, self.group, *ids))
        for attempt in range(3):
            try:
                await acker.call(command, self._socket_timeout)
                self._acked(len(ids))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt == 2:
                    logger.warning(
                        "%s: acknowledging %d entries failed (%s); they will be delivered "
                        "again once their lease lapses",
                        self.describe(),
                        len(ids),
                        scrub(f"{type(exc).__name__}: {exc}", self._url),
                    )
                    return
                await asyncio.sleep(0.05 * (attempt + 1))

    async def _send_releases(self, ids: Sequence[bytes]) -> None:
        await self._requeue(ids, 0)

    async def _requeue(self, ids: Sequence[bytes], increment: int) -> list[int]:
        """Park these entries (if still ours) for the group's next reclaim, their
        delivery count kept (``increment`` 1: a RETRY, the reclaim counts the next
        delivery) or lowered by one (0: a RELEASE, uncounted): one script per page, and
        nothing written to the stream. Returns ``[parked, not ours, gone]``."""
        assert self._scripts is not None
        totals = [0, 0, 0]
        for start in range(0, len(ids), _PAGE):
            page = list(ids[start : start + _PAGE])
            async with asyncio.timeout(self._socket_timeout):
                done = await self._scripts.requeue(
                    keys=[self.stream],
                    args=[self.group, self.consumer, PARKED_CONSUMER, increment, *page],
                )
            for i in range(3):
                totals[i] += int(done[i])
        if totals[0] and not self._closed and not self._paused:
            await self._reclaim_soon()
        return totals

    async def _reclaim_soon(self) -> None:
        """Entries were parked ready: the reader reclaims before its next read (ending a
        blocked read now, so that a RETRY or a RELEASE comes back at once)."""
        self._reclaim_now = True
        reader = self._reader
        if reader is not None and reader.reading:
            await self._unblock()
        elif self._waiting:
            self._wake_reader.set()

    async def _unblock(self) -> None:
        """End the reader's blocking ``XREADGROUP`` now, if one waits (``CLIENT
        UNBLOCK``: it returns what it has, or nothing)."""
        reader, client = self._reader, self._client
        if reader is None or client is None or not reader.reading or reader.client_id is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._socket_timeout):
                await client.client_unblock(reader.client_id)

    async def extend_leases(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Reset the idle time of these entries (``XCLAIM ... JUSTID``, which counts no
        delivery), if still ours: their lease runs ``lease`` seconds from now. Entries
        another consumer took meanwhile are left alone (logged)."""
        if not self._started or self._closed or self._scripts is None:
            return
        ids = [d.token.id for d in deliveries if isinstance(d.token, Entry) and not d.token.settled]
        if not ids:
            return
        try:
            async with asyncio.timeout(self._socket_timeout):
                lost = await self._scripts.extend(
                    keys=[self.stream], args=[self.group, self.consumer, *ids]
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise operation_error(f"extending {len(ids)} leases", exc, self._url) from None
        if lost:
            logger.warning(
                "%s: %d entries are no longer this consumer's (their lease lapsed before it "
                "was extended): another consumer may handle them too",
                self.describe(),
                len(lost),
            )

    # -- delayed retries ------------------------------------------------------------------

    async def _start_legacy_mover(self, client: redis.asyncio.Redis) -> None:
        """Earlier versions parked delayed copies in ``<stream>:delayed``: while any are
        left there, a task adds the due ones to the stream as those versions would have
        (their originals were acknowledged when they were parked). Best effort."""
        if not self._delayed_retry or self._legacy_delayed_key == self.delayed_key:
            return  # a shared key: the reclaim moves legacy members itself
        try:
            async with asyncio.timeout(self._socket_timeout):
                left = await client.zcard(self._legacy_delayed_key)
        except Exception as exc:  # WRONGTYPE, no permission: nothing of ours there
            logger.debug(
                "%s: not looking for earlier versions' delayed retries: %s",
                self.describe(),
                scrub(f"{type(exc).__name__}: {exc}", self._url),
            )
            return
        if left:
            logger.info(
                "%s: %d delayed retries of an earlier version wait in %r; they are added to "
                "the stream when due",
                self.describe(),
                left,
                self._legacy_delayed_key,
            )
            self._mover = asyncio.get_running_loop().create_task(
                self._move_legacy_due(), name=f"loafer:{self.stream}:legacy-delayed"
            )

    async def _move_legacy_due(self) -> None:
        """Move earlier versions' due delayed copies onto the stream, until none is left
        (or closed)."""
        assert self._scripts is not None
        pause = 0.5
        while not self._closed:
            try:
                async with asyncio.timeout(self._socket_timeout):
                    moved, wait_ms = await self._scripts.move_legacy_due(
                        keys=[self.stream, self._legacy_delayed_key], args=[100]
                    )
                moved, wait_ms = int(moved), int(wait_ms)
                if moved >= 100:
                    continue
                if wait_ms < 0:
                    return  # none left
                pause = min(0.5, max(0.005, wait_ms / 1000))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug(
                    "%s: moving earlier versions' due retries failed: %s",
                    self.describe(),
                    scrub(f"{type(exc).__name__}: {exc}", self._url),
                )
                pause = 1.0
            await asyncio.sleep(pause)  # a periodic timer: the set is Redis's, not ours

    # -- draining, health, shutdown -------------------------------------------------------

    async def _stop_reader(self, timeout: float) -> None:
        """End the reader task: unblock its read (CLIENT UNBLOCK), let it put what it got
        into the buffer, else cancel it (and look for entries whose reply was lost)."""
        self._paused = True
        self._wake_reader.set()
        task, self._reading = self._reading, None
        if task is None or task.done():
            return
        await self._unblock()
        with contextlib.suppress(Exception):
            await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({task}, timeout=1.0)
            self._recover = True

    async def stop_fetching(self) -> None:
        """A drain begins: stop reading and release what is buffered at once
        (:class:`loafer_core.provider.Drainable`; a later ``fetch`` reads again)."""
        if not self._started or self._closed:
            return
        await self._stop_reader(self._socket_timeout)
        await self._release_buffer()

    async def _release_buffer(self) -> None:
        buffered = [entry_id for entry_id, _, _ in self._buffer]
        self._buffer.clear()
        if buffered:
            released, _, _ = await self._requeue(buffered, 0)
            logger.info(
                "%s: released %d buffered entries back to the group", self.describe(), released
            )

    async def health(self) -> bool:
        """True when Redis answers a PING within ``socket_timeout``."""
        if not self._started or self._closed or self._client is None:
            return False
        try:
            async with asyncio.timeout(self._socket_timeout):
                return bool(await self._client.ping())
        except Exception:
            return False

    async def backlog(self) -> int | None:
        """Entries not yet delivered to the group (``XINFO GROUPS`` lag, Redis 7+);
        ``None`` when not running, unanswered, or Redis cannot tell."""
        if not self._started or self._closed or self._client is None:
            return None
        try:
            async with asyncio.timeout(self._socket_timeout):
                groups = await self._groups(self._client)
        except Exception as exc:  # a cancellation passes through
            logger.debug("%s: backlog not read: %s", self.describe(), type(exc).__name__)
            return None
        group = (groups or {}).get(self.group)
        lag = group.get("lag") if group else None
        return lag if isinstance(lag, int) else None

    async def close(self) -> None:
        """Stop reading, flush acknowledgements, release every entry still pending for
        this consumer (buffered, unsettled, or read with a lost reply), disconnect.
        Bounded by ``close_timeout``; idempotent."""
        if self._closed:
            return
        if not self._started:
            self._closed = True
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._close_timeout
        try:
            await self._stop_reader(min(self._close_timeout / 2, self._socket_timeout))
            self._closed = True
            self._wake_reader.set()
            self._filled.set()
            mover, self._mover = self._mover, None
            if mover is not None:
                mover.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait({mover}, timeout=1.0)
            async with asyncio.timeout_at(deadline):
                for batch in (self._acks, self._releases):
                    if batch is not None:
                        with contextlib.suppress(Exception):
                            await batch.flush()
                self._buffer.clear()
                self._outstanding.clear()
                mine = await self._own_pending()
                if mine:
                    released, _, _ = await self._requeue(mine, 0)
                    logger.info(
                        "%s: released %d entries still pending for %s",
                        self.describe(),
                        released,
                        self.consumer,
                    )
                assert self._scripts is not None
                await self._scripts.forget_consumer(
                    keys=[self.stream], args=[self.group, self.consumer]
                )
        except TimeoutError:
            logger.warning(
                "%s: Redis did not answer within close_timeout (%ss); what is still pending "
                "for %s is reclaimed by the group once its lease lapses",
                self.describe(),
                self._close_timeout,
                self.consumer,
            )
        except Exception as exc:
            logger.warning(
                "%s: closing failed (%s); what is still pending for %s is reclaimed by the "
                "group once its lease lapses",
                self.describe(),
                scrub(f"{type(exc).__name__}: {exc}", self._url),
                self.consumer,
            )
        finally:
            self._closed = True
            scheduled, self._scheduled = self._scheduled, None
            if scheduled is not None:
                await scheduled.stop(min(self._socket_timeout, self._close_timeout))
            for batch in (self._acks, self._releases):
                if batch is not None:
                    batch.cancel()
            for direct in (self._reader, self._acker):
                if direct is not None:
                    await direct.disconnect()
            self._reader = self._acker = None
            client, self._client = self._client, None
            if client is not None:
                await self._close_client(client)

    async def _close_client(self, client: redis.asyncio.Redis) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._close_timeout):
                await client.aclose(close_connection_pool=True)
