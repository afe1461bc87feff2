"""Kafka provider for loafer-core: one topic consumed in a consumer group, over aiokafka.

Offsets are committed by the provider, never automatically, and only up to the lowest
offset still unsettled in each partition (:mod:`loafer_kafka._offsets`): deliveries of
a partition run concurrently and settle in any order, and a crash redelivers from that
offset on, never skips a message in hand (at least once). Commits are batched, every
``commit_interval``, on revocation and at close.

Outcome mapping:

- ``ACCEPT``: the offset is settled (committed with the next batch).
- ``RETRY(delay)``: the record is held in the consumer and handed out again after
  ``delay`` (at most ``max_retry_delay``) with ``attempt`` raised by one; its offset
  stays uncommitted meanwhile, so a crash redelivers it. No retry topic: a retry topic
  would reorder a key's messages and copy each retried record; the hold keeps one copy
  and the partition's other messages flowing.
- ``RELEASE``: handed out again at once, ``attempt`` unchanged.
- ``REJECT(reason)``: the record is produced to the dead-letter topic (``<topic>.dlt`` by
  default) with the headers ``loafer-dead-reason``, ``loafer-dead-attempts`` and
  ``loafer-dead-origin``, its acknowledgement awaited, then its offset settled: a crash
  in between leaves a duplicate dead letter, never a loss.

``attempt`` is counted by the consumer: it starts again at 1 when a record is read
again after a restart or a rebalance. Rebalances: revoked partitions' in-flight
deliveries have ``revoke_timeout`` to settle; their offsets are committed, and what is
still in hand is abandoned (its late settle ignored: the partition's new owner reads it
again from the committed offset).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from loafer_core.errors import ConfigurationError, LoaferError, ProviderError
from loafer_core.kit import map_exceptions
from loafer_core.outcome import Outcome, OutcomeKind
from loafer_core.provider import Capabilities, Delivery, Description, Support
from loafer_core.settings import settings_of
from loafer_core.translator import JSONTranslator
from loafer_kafka import _client, _describe
from loafer_kafka._offsets import Offsets
from loafer_kafka.errors import mask_url, protect, secrets_of, translate
from loafer_kafka.settings import KafkaSettings

__all__ = ["DEAD_ATTEMPTS_HEADER", "DEAD_ORIGIN_HEADER", "DEAD_REASON_HEADER", "KafkaProvider"]

logger = logging.getLogger("loafer_kafka")

DEAD_REASON_HEADER = "loafer-dead-reason"
"""Header of a dead letter: why it was rejected."""
DEAD_ATTEMPTS_HEADER = "loafer-dead-attempts"
"""Header of a dead letter: the attempts it had."""
DEAD_ORIGIN_HEADER = "loafer-dead-origin"
"""Header of a dead letter: ``topic/partition/offset`` it came from."""
#: Longest reject reason written to the header.
MAX_REASON = 900
#: A fetch's wait while deliveries are out (a RELEASE is handed out again that soon).
SHORT_POLL = 0.05
#: Keywords of the admin client (the others are the consumer's).
_ADMIN_KEYS = (
    "bootstrap_servers",
    "client_id",
    "security_protocol",
    "ssl_context",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
)


class _Token:
    __slots__ = ("attempt", "dead", "epoch", "record", "settled", "tp")

    def __init__(self, tp: TopicPartition, record: Any, epoch: int, attempt: int) -> None:
        self.tp = tp
        self.record = record
        self.epoch = epoch
        self.attempt = attempt
        self.settled = False
        self.dead: asyncio.Task[None] | None = None


class _Partition:
    """One assigned partition: its epoch (a new one per assignment), offsets, and how many
    of its deliveries are handed out and unsettled."""

    __slots__ = ("epoch", "offsets", "out")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.offsets = Offsets()
        self.out = 0


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, provider: KafkaProvider) -> None:
        self.provider = provider

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.provider._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.provider._assigned(set(assigned))


def _one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_REASON] or "rejected"


class KafkaProvider:
    """Consume a Kafka topic in a consumer group, at least once.

    Takes one :class:`~loafer_kafka.settings.KafkaSettings` (its docstring lists the
    settings), or the same values as flat keywords: ``KafkaProvider("orders",
    group_id="billing", url="kafka://127.0.0.1:9092")``. The flat names: ``topic``
    (also positional), ``group_id``, ``create``, ``partitions``, ``dead_letter_topic``,
    ``ordering``, ``max_poll_records``, ``commit_interval``, ``revoke_timeout``,
    ``session_timeout``, ``idempotent``, ``max_retry_delay``, ``url``, ``ssl_context``,
    ``connection_options``, ``poll_timeout``, ``publish_timeout``, ``connect_timeout``,
    ``close_timeout``. A wrong value is a ConfigurationError naming it; the URL's
    password never appears in logs, errors or reprs.
    """

    default_translator = JSONTranslator()
    settings_type = KafkaSettings

    def __init__(self, settings: KafkaSettings | str | None = None, /, **options: Any) -> None:
        self.settings = settings_of(KafkaSettings, "KafkaProvider", settings, options)
        s = self.settings
        self.topic = s.topic
        self.group_id: str = s.group_id or f"loafer-{s.topic}"
        self.dead_letter_topic = s.dead_letter_topic
        self._url = mask_url(s.connection.url)
        self._hosts = _client.hosts_of(s.connection)
        self._secrets = secrets_of(s.connection.url)
        self._timeouts = s.timeouts
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._parts: dict[TopicPartition, _Partition] = {}
        self._epochs = itertools.count(1)
        self._held: list[tuple[float, int, Delivery]] = []
        self._seq = itertools.count()
        self._committer: asyncio.Task[None] | None = None
        self._partitions: int | None = None
        self._drained: asyncio.Event | None = None
        self._ordering = s.ordering
        self._started = False
        self._closed = False
        #: Deliveries abandoned by revocations (read again by the partition's new owner).
        self.abandoned = 0

    # -- description ----------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The topic's name: the destination spans are named by."""
        return self.topic

    def describe(self) -> str:
        """A short description for logs (no secrets)."""
        return f"kafka topic {self.topic!r} (group {self.group_id!r})"

    def description(self) -> Description:
        """The topic, its group, the bootstrap servers (no credentials), the kafka
        bindings: see :class:`~loafer_core.provider.Describable`."""
        return _describe.provider(
            self._url,
            self._hosts,
            self.topic,
            self.group_id,
            self.dead_letter_topic,
            self._partitions,
        )

    def __repr__(self) -> str:
        return f"KafkaProvider(topic={self.topic!r}, group_id={self.group_id!r})"

    @property
    def capabilities(self) -> Capabilities:
        """Delayed retry and RELEASE held in the consumer, attempts counted by it
        (emulated), dead-lettering by a produce then a commit (emulated) where a
        dead-letter topic is set, ordering keys (the record's key); no lease."""
        return Capabilities(
            delayed_retry=Support.EMULATED,
            dead_letter=Support.EMULATED if self.dead_letter_topic else Support.NONE,
            attempt_count=Support.EMULATED,
            release_uncounted=Support.EMULATED,
            ordering_keys=Support.NONE if self.settings.ordering == "none" else Support.NATIVE,
            lease_extension=Support.NONE,
            max_retry_delay=float(self.settings.max_retry_delay),
            retry_waits=Support.NONE,
        )

    # -- start-up -------------------------------------------------------------------------

    def _error(self, what: str, exc: BaseException) -> LoaferError:
        return translate(what, exc, where=self._hosts, secrets=self._secrets)

    def _options(self) -> dict[str, Any]:
        protect(self._secrets)
        return _client.options(self.settings.connection, f"loafer-{self.group_id}")

    async def verify(self) -> None:
        """Check the topic (and the dead-letter topic) as ``start`` would, joining no
        group and consuming nothing."""
        consumer = AIOKafkaConsumer(
            **self._options(), request_timeout_ms=int(self._timeouts.connect * 1000)
        )
        try:
            with map_exceptions(lambda exc: self._error(f"checking {self.describe()}", exc)):
                async with asyncio.timeout(float(self._timeouts.connect)):
                    await consumer.start()
                    await self._check_topics(consumer, create=False)
        finally:
            await consumer.stop()

    async def start(self, capacity: int) -> None:
        """Connect, check (or create) the topics, join the group. Safe to call again
        after it failed."""
        if self._closed:
            raise ProviderError(f"{self.describe()}: provider already closed")
        if self._started:
            return
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigurationError(
                f"KafkaProvider.start: capacity must be >= 1, got {capacity!r}"
            )
        s = self.settings
        options = self._options()
        session = int(s.session_timeout * 1000)
        consumer = AIOKafkaConsumer(
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session,
            heartbeat_interval_ms=max(100, session // 3),
            max_poll_records=s.max_poll_records,
            **options,
        )
        producer: AIOKafkaProducer | None = None
        try:
            with map_exceptions(lambda exc: self._error(f"starting {self.describe()}", exc)):
                async with asyncio.timeout(float(self._timeouts.connect)):
                    await consumer.start()
                    await self._check_topics(consumer, create=s.create)
                    if self.dead_letter_topic:
                        producer = AIOKafkaProducer(
                            acks="all",
                            enable_idempotence=s.idempotent,
                            **{k: v for k, v in options.items() if k in _ADMIN_KEYS},
                        )
                        await producer.start()
        except BaseException:
            await consumer.stop()
            if producer is not None:
                await producer.stop()
            raise
        consumer.subscribe([self.topic], listener=_Listener(self))
        self._consumer, self._producer = consumer, producer
        self._committer = asyncio.get_running_loop().create_task(
            self._commit_loop(), name=f"loafer:kafka:{self.topic}:commit"
        )
        self._started = True
        logger.info(
            "%s: consuming from %s (dead letters %s)",
            self.describe(),
            self._hosts,
            self.dead_letter_topic or "none",
        )

    async def _check_topics(self, consumer: AIOKafkaConsumer, *, create: bool) -> None:
        topics = await consumer.topics()
        wanted = [t for t in (self.topic, self.dead_letter_topic) if t]
        missing = [t for t in wanted if t not in topics]
        if missing and create:
            await self._create(missing)
            topics = await consumer.topics()
            missing = [t for t in wanted if t not in topics]
        if missing:
            raise ConfigurationError(
                f"{self.describe()}: topic {missing[0]!r} not found at {self._hosts}; create "
                f"it (kafka-topics.sh --create --topic {missing[0]}) or pass create=True"
                + ("" if missing[0] == self.topic else " (or dead_letter_topic=None)")
            )
        self._partitions = len(consumer.partitions_for_topic(self.topic) or ()) or None

    async def _create(self, topics: Sequence[str]) -> None:
        options = {k: v for k, v in self._options().items() if k in _ADMIN_KEYS}
        admin = AIOKafkaAdminClient(**options)
        await admin.start()
        try:
            new = [NewTopic(t, self.settings.partitions, 1) for t in topics]
            await admin.create_topics(new)
            logger.info("%s: created %s", self.describe(), ", ".join(topics))
        finally:
            await admin.close()

    # -- rebalances -----------------------------------------------------------------------

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            if tp not in self._parts:
                self._parts[tp] = _Partition(next(self._epochs))
        logger.debug("%s: assigned %s", self.describe(), sorted(tp.partition for tp in assigned))

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        parts = {tp: self._parts[tp] for tp in revoked if tp in self._parts}
        if not parts:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(self.settings.revoke_timeout)
        while any(p.out for p in parts.values()) and loop.time() < deadline:
            self._drained = asyncio.Event()  # set by a settle that empties a partition
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - loop.time()):
                    await self._drained.wait()
        self._drained = None
        await self._commit(parts)
        for tp in parts:
            self._parts.pop(tp, None)
        left = sum(p.offsets.pending for p in parts.values())
        if left:
            self.abandoned += left
            logger.info(
                "%s: partitions %s revoked with %d deliveries unsettled: abandoned (read "
                "again from the committed offset by their new owner)",
                self.describe(),
                sorted(tp.partition for tp in parts),
                left,
            )

    # -- consuming ------------------------------------------------------------------------

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        """Return up to ``max_messages`` deliveries (redeliveries that are due first),
        polling up to ``poll_timeout``. Cancellable: a cancelled poll hands nothing out
        and moves no offset."""
        if self._closed or max_messages < 1:
            return []
        consumer = self._consumer
        if not self._started or consumer is None:
            raise ProviderError(f"{self.describe()}: fetch before start")
        loop = asyncio.get_running_loop()
        due = self._due(max_messages, loop.time())
        if due:
            return due
        wait = float(self._timeouts.poll)
        if self._held or any(p.out for p in self._parts.values()):
            wait = min(wait, SHORT_POLL)
        if self._held:
            wait = max(0.0, min(wait, self._held[0][0] - loop.time()))
        limit = min(max_messages, self.settings.max_poll_records)
        with map_exceptions(lambda exc: self._error("fetching", exc)):
            batches = await consumer.getmany(timeout_ms=int(wait * 1000), max_records=limit)
        out: list[Delivery] = []
        for tp, records in batches.items():
            part = self._parts.get(tp)
            if part is None:
                part = self._parts[tp] = _Partition(next(self._epochs))
            for record in records:
                out.append(self._delivery(tp, part, record))
        return out

    def _delivery(self, tp: TopicPartition, part: _Partition, record: Any) -> Delivery:
        part.offsets.add(record.offset)
        part.out += 1
        return self._make(_Token(tp, record, part.epoch, 1))

    def _make(self, token: _Token) -> Delivery:
        record = token.record
        key = record.key
        key_text = key.decode("utf-8", "backslashreplace") if key is not None else None
        raw_headers = record.headers
        headers = (
            {
                k: v.decode("utf-8", "backslashreplace") if v is not None else ""
                for k, v in raw_headers
            }
            if raw_headers
            else {}
        )
        topic, partition, offset = record.topic, record.partition, record.offset
        message_id = f"{topic}/{partition}/{offset}"
        value = record.value
        if value is None:
            value = b""
        ordering = self._ordering
        attempt = token.attempt
        return Delivery(
            value,
            value,
            message_id,
            {
                "headers": headers,
                "message_id": message_id,
                "attempt": attempt,
                "queue": topic,
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "key": key_text,
                "timestamp": record.timestamp,
                "group_id": self.group_id,
            },
            attempt,
            key_text if ordering == "key" else str(partition) if ordering == "partition" else None,
            token,
        )

    def _due(self, limit: int, now: float) -> list[Delivery]:
        held, out = self._held, list[Delivery]()
        while held and held[0][0] <= now and len(out) < limit:
            delivery = heapq.heappop(held)[2]
            token = delivery.token
            part = self._parts.get(token.tp)
            if part is None or part.epoch != token.epoch:
                continue  # its partition was revoked: read again by its new owner
            part.out += 1
            out.append(delivery)
        return out

    # -- settling -------------------------------------------------------------------------

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Settle one delivery (see the module docstring for the mapping). A failed
        dead letter raises ProviderError and leaves the delivery unsettled (safe to
        send again); a delivery of a revoked partition is ignored."""
        token = delivery.token
        if not isinstance(token, _Token):
            raise ProviderError(f"{self.describe()}: {delivery!r} was not fetched from Kafka")
        if token.settled:
            return
        kind = outcome.kind
        if kind is OutcomeKind.REJECT:
            await self._reject(delivery, token, outcome.reason or "rejected")
            if token.settled:
                return
        part = self._parts.get(token.tp)
        token.settled = True
        if part is None or part.epoch != token.epoch:
            logger.debug(
                "%s: %s settled after its partition was revoked: ignored",
                self.describe(),
                delivery.message_id,
            )
            return
        part.out -= 1
        if self._drained is not None and not part.out:
            self._drained.set()
        if kind is OutcomeKind.RETRY or kind is OutcomeKind.RELEASE:
            delay = 0.0
            attempt = token.attempt
            if kind is OutcomeKind.RETRY:
                attempt += 1
                delay = min(max(outcome.delay or 0.0, 0.0), self.settings.max_retry_delay)
            again = self._make(_Token(token.tp, token.record, token.epoch, attempt))
            due = asyncio.get_running_loop().time() + delay
            heapq.heappush(self._held, (due, next(self._seq), again))
            return
        part.offsets.done(token.record.offset)

    async def _reject(self, delivery: Delivery, token: _Token, reason: str) -> None:
        if self._producer is None:
            logger.warning(
                "%s: message %s rejected (%s) with no dead-letter topic: committed, dropped",
                self.describe(),
                delivery.message_id,
                _one_line(reason),
            )
            return
        if token.dead is None:
            token.dead = asyncio.get_running_loop().create_task(self._dead(token, reason))
        try:
            with map_exceptions(lambda exc: self._error("producing a dead letter", exc)):
                await asyncio.shield(token.dead)
        except Exception:
            token.dead = None  # not surely produced: a settle sent again produces again
            raise

    async def _dead(self, token: _Token, reason: str) -> None:
        producer, record = self._producer, token.record
        assert producer is not None and self.dead_letter_topic is not None
        headers = list(record.headers or ())
        headers += [
            (DEAD_REASON_HEADER, _one_line(reason).encode()),
            (DEAD_ATTEMPTS_HEADER, str(token.attempt).encode()),
            (DEAD_ORIGIN_HEADER, f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        async with asyncio.timeout(float(self._timeouts.publish)):
            await producer.send_and_wait(
                self.dead_letter_topic, record.value, key=record.key, headers=headers
            )

    # -- commits --------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        interval = float(self.settings.commit_interval)
        while True:
            await asyncio.sleep(interval)
            await self._commit(self._parts)

    async def _commit(self, parts: Mapping[TopicPartition, _Partition]) -> None:
        consumer = self._consumer
        chosen = {tp: p for tp, p in parts.items() if p.offsets.to_commit() is not None}
        if consumer is None or not chosen:
            return
        offsets = {tp: p.offsets.safe for tp, p in chosen.items()}
        try:
            async with asyncio.timeout(float(self._timeouts.publish)):
                await consumer.commit(offsets)
        except Exception as exc:  # a cancellation passes through
            logger.warning(
                "%s: committing offsets failed (%s); retried with the next commit",
                self.describe(),
                self._error("committing", exc),
            )
            return
        for tp, part in chosen.items():
            offset = offsets[tp]
            if offset is not None:
                part.offsets.mark_committed(offset)

    # -- gauges, health and shutdown ------------------------------------------------------

    async def lag(self) -> dict[int, int]:
        """Per assigned partition: records after the committable offset (high watermark
        from the fetch responses minus the lowest unsettled offset)."""
        consumer = self._consumer
        if consumer is None or self._closed:
            return {}
        out: dict[int, int] = {}
        for tp, part in list(self._parts.items()):
            high = consumer.highwater(tp)
            if high is None:
                continue
            base = part.offsets.safe
            if base is None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2.0):
                        base = await consumer.committed(tp)
            out[tp.partition] = max(0, high - (base or 0))
        return out

    async def backlog(self) -> int | None:
        """The topic's lag for this consumer: the sum of :meth:`lag` (``None`` before
        any fetch response told a high watermark)."""
        lag = await self.lag()
        return sum(lag.values()) if lag else None

    async def health(self) -> bool:
        """True while started and not closed."""
        return self._started and not self._closed

    async def close(self) -> None:
        """Commit the settled offsets, leave the group, disconnect. Idempotent, bounded
        by ``close_timeout``."""
        if self._closed:
            return
        self._closed = True
        committer, self._committer = self._committer, None
        if committer is not None:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        self._held.clear()
        try:
            async with asyncio.timeout(float(self._timeouts.close)):
                if consumer is not None:
                    self._consumer = consumer
                    await self._commit(self._parts)
                    self._consumer = None
                    await _leave(consumer)
        except Exception as exc:  # a cancellation passes through
            logger.warning("%s: close: %s", self.describe(), self._error("closing", exc))
        finally:
            self._parts.clear()
            if consumer is not None:
                await consumer.stop()
            if producer is not None:
                await producer.stop()


async def _leave(consumer: AIOKafkaConsumer) -> None:
    """Leave the group now, so its partitions go to the other members at once.

    aiokafka sends LeaveGroup only for a generation above 0; Tansu numbers a group's
    first generation 0, so its first member would hold its partitions until its session
    timed out. This sends the request for that case (aiokafka internals, guarded: any
    failure leaves it to the session timeout)."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "generation", None) != 0:
        return
    member = getattr(coordinator, "member_id", "")
    if not member:
        return
    with contextlib.suppress(Exception):
        from aiokafka.protocol.group import LeaveGroupRequest

        await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, member))
        coordinator.reset_generation()
