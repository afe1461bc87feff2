"""Google Cloud Pub/Sub provider for loafer-core: one pull subscription, over the REST API
(:mod:`loafer_pubsub._api`, authorised by gcloud-aio-auth).

A delivery's lease is its ack deadline: the subscription's ``ackDeadlineSeconds``, read
at start (``lease_duration``), extended by ``modifyAckDeadline`` (``extend_leases``).
Pulls ask for at most the route's free capacity (Pub/Sub's flow control is the
dispatcher's ``max_concurrency``) and answer at once (``returnImmediately``): a pull
abandoned while the server waits would keep its messages leased to nobody until their
deadline.

Outcome mapping:

- ``ACCEPT`` -> ``acknowledge``, batched: the settle returns once the ack is queued
  (sent within 5 ms with the others, retried, flushed by ``close``); an ack lost with the
  process means a redelivery (at least once), never a loss.
- ``RETRY(delay)`` -> ``modifyAckDeadline(delay)``: the message stays leased for
  ``delay`` seconds (rounded up to whole seconds, at most 600), then Pub/Sub redelivers
  it; ``RETRY()`` -> ``modifyAckDeadline(0)``, redelivered at once.
- ``RELEASE`` -> ``modifyAckDeadline(0)`` (a nack). Pub/Sub counts it as a delivery
  attempt: a released message comes back with its attempt raised by one.
- ``REJECT(reason)`` -> the message is published to the dead-letter topic (the
  ``dead_letter_topic`` setting, else the subscription's dead-letter policy topic) with
  the reason in the ``x-loafer-reject-reason`` attribute, its message id awaited, then
  acknowledged: a crash in between leaves a duplicate dead letter, never a loss. Without
  a dead-letter topic the message is acknowledged (dropped) with a warning.

``attempt`` is Pub/Sub's ``deliveryAttempt``, which the service gives only on
subscriptions with a dead-letter policy; the policy's ``maxDeliveryAttempts`` forwards a
message that many times nacked or lapsed to the dead-letter topic by the service itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from typing import Any

from loafer_core.deadletters import dead_headers
from loafer_core.errors import ConfigurationError, LoaferError, ProviderError
from loafer_core.kit import Batcher, Batching, Failure, map_exceptions
from loafer_core.outcome import Outcome, OutcomeKind
from loafer_core.provider import Capabilities, Delivery, Description, Support
from loafer_core.settings import settings_of
from loafer_core.translator import JSONTranslator
from loafer_pubsub import _describe
from loafer_pubsub._api import Api, Received, api_root, encode_message, secrets_of
from loafer_pubsub.errors import ApiError, mask_url, protect, scrub, translate
from loafer_pubsub.settings import MAX_ACK_DEADLINE, PubSubSettings

__all__ = [
    "ORIGINAL_MESSAGE_ID_ATTRIBUTE",
    "REJECTED_FROM_ATTRIBUTE",
    "REJECT_REASON_ATTRIBUTE",
    "PubSubProvider",
]

logger = logging.getLogger("loafer_pubsub")

REJECT_REASON_ATTRIBUTE = "x-loafer-reject-reason"
"""Attribute set on dead-lettered copies: why the message was rejected."""
REJECTED_FROM_ATTRIBUTE = "x-loafer-rejected-from"
"""Attribute set on dead-lettered copies: the subscription it came from."""
ORIGINAL_MESSAGE_ID_ATTRIBUTE = "x-loafer-original-message-id"
"""Attribute set on dead-lettered copies: the message's id in its own topic."""
#: Longest reject reason written to the attribute (Pub/Sub takes 1,024 bytes).
MAX_REASON = 900
#: Ack ids per acknowledge / modifyAckDeadline call (the request limit is 512 KB).
MAX_IDS = 1000
#: The longest a fetch asking for less than half the capacity waits for more to free up,
#: seconds (fewer, larger pulls: each is an HTTP call).
GATHER = 0.01


class _Token:
    """A delivery's settlement handle: its ack id, and how far its settlement went."""

    __slots__ = ("ack_id", "dead", "extension", "settled", "settling")

    def __init__(self, ack_id: str) -> None:
        self.ack_id = ack_id
        self.settling = False
        self.settled = False
        self.extension: asyncio.Future[Any] | None = None
        #: the dead letter's publish, once begun (a repeated settle awaits it)
        self.dead: asyncio.Task[None] | None = None


def _short(path: str | None) -> str | None:
    return path.rsplit("/", 1)[-1] if path else None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_REASON] or "rejected"


class PubSubProvider:
    """Consume a Pub/Sub pull subscription, at least once.

    Takes one :class:`~loafer_pubsub.settings.PubSubSettings` (its docstring lists the
    settings), or the same values as flat keywords: ``PubSubProvider("orders-billing",
    project="shop", emulator_host="127.0.0.1:8085")``. The flat names: ``subscription``
    (also positional), ``project``, ``create``, ``topic``, ``ack_deadline``,
    ``message_ordering``, ``max_delivery_attempts``, ``subscription_options``,
    ``dead_letter_topic``, ``max_messages``, ``poll_interval``, ``emulator_host``,
    ``api_root``, ``service_file``, ``poll_timeout``, ``publish_timeout``,
    ``connect_timeout``, ``close_timeout``. A wrong value is a ConfigurationError naming
    it; the credentials never appear in logs, errors or reprs.
    """

    default_translator = JSONTranslator()
    settings_type = PubSubSettings

    def __init__(self, settings: PubSubSettings | str | None = None, /, **options: Any) -> None:
        self.settings = settings_of(PubSubSettings, "PubSubProvider", settings, options)
        s = self.settings
        self.subscription = s.subscription
        self.project = s.project
        self._timeouts = s.timeouts
        self._api: Api | None = None
        self._root, self._emulator = api_root(s.endpoint)
        self._secrets: tuple[str, ...] = ()
        self._sub_path = f"projects/{s.project}/subscriptions/{s.subscription}"
        self._topic: str | None = s.setup.topic
        self._dead_topic: str | None = (
            f"projects/{s.project}/topics/{s.dead_letter_topic}" if s.dead_letter_topic else None
        )
        self._has_policy: bool | None = None
        self._ordering = bool(s.setup.message_ordering)
        self._lease = float(s.setup.ack_deadline)
        self._buffer: list[Received] = []
        self._reads: set[asyncio.Task[list[Received]]] = set()
        self._acks: Batcher[str] | None = None
        self._modacks: Batcher[tuple[str, int]] | None = None
        self._capacity = 1
        #: deliveries handed out and not yet settled; set ``_freed`` at half the capacity
        self._outstanding = 0
        self._freed = asyncio.Event()
        self._started = False
        self._closed = False
        self._paused = False
        #: Messages given back (nacked) unhandled by a drain or close.
        self.released_unhandled = 0

    # -- description ----------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The subscription's name: the destination spans are named by."""
        return self.subscription

    def describe(self) -> str:
        """A short description for logs (no secrets)."""
        return f"pubsub subscription {self._sub_path!r}"

    def description(self) -> Description:
        """The subscription, the API's host (no credentials), the googlepubsub binding:
        see :class:`~loafer_core.provider.Describable`."""
        root, emulator = api_root(self.settings.endpoint)
        binding = _describe.bindings(self.settings.schema, self.settings.schema_encoding)
        return _describe.provider(
            mask_url(root), emulator, self.subscription, self._topic, self._ordering, binding
        )

    def __repr__(self) -> str:
        return f"PubSubProvider(subscription={self._sub_path!r})"

    @property
    def capabilities(self) -> Capabilities:
        """Delayed retry (``modifyAckDeadline``, up to 600 s), lease extension, ordering
        keys; attempts (``deliveryAttempt``) where the subscription has a dead-letter
        policy; dead-lettering (emulated: a publish then an ack) where a dead-letter topic
        is known. Before start, both follow ``dead_letter_topic``; after, the
        subscription read. RELEASE counts an attempt."""
        policy = self._has_policy if self._has_policy is not None else bool(self._dead_topic)
        return Capabilities(
            delayed_retry=Support.NATIVE,
            dead_letter=Support.EMULATED if self._dead_topic else Support.NONE,
            attempt_count=Support.NATIVE if policy else Support.NONE,
            release_uncounted=Support.NONE,
            ordering_keys=Support.NATIVE,
            lease_extension=Support.NATIVE,
            max_retry_delay=float(MAX_ACK_DEADLINE),
            retry_waits=Support.NONE,
        )

    @property
    def lease_duration(self) -> float:
        """The subscription's ack deadline (read at start; the configured one before)."""
        return self._lease

    # -- start-up -------------------------------------------------------------------------

    def _error(self, what: str, exc: BaseException) -> LoaferError:
        return translate(what, exc, where=mask_url(self._root), secrets=self._secrets)

    def _new_api(self) -> Api:
        api = Api(self.settings.endpoint, self.project)
        self._root, self._emulator = api.root, api.emulator
        self._secrets = secrets_of(self.settings.endpoint)
        protect(self._secrets)
        return api

    async def verify(self) -> None:
        """Check the subscription (and the dead-letter topic) as ``start`` would, creating
        and consuming nothing. ConfigurationError for what is wrong, ProviderError when
        the API cannot be reached."""
        api = self._new_api()
        try:
            with map_exceptions(lambda exc: self._error(f"checking {self.describe()}", exc)):
                await self._read_subscription(api, create=False)
        finally:
            await api.close()

    async def start(self, capacity: int) -> None:
        """Read (or create) the subscription: its ack deadline, dead-letter policy and
        ordering. Safe to call again after it failed."""
        if self._closed:
            raise ProviderError(f"{self.describe()}: provider already closed")
        if self._started:
            return
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigurationError(
                f"PubSubProvider.start: capacity must be >= 1, got {capacity!r}"
            )
        api = self._new_api()
        try:
            with map_exceptions(lambda exc: self._error(f"starting {self.describe()}", exc)):
                await self._read_subscription(api, create=bool(self.settings.create))
        except BaseException:
            await api.close()
            raise
        self._api = api
        self._capacity = capacity
        self._acks = self._batcher("acknowledge", self._send_acks)
        self._modacks = self._batcher("modifyAckDeadline", self._send_modacks)
        self._started = True
        logger.info(
            "%s: consuming from %s (ack deadline %ss, dead letters %s)",
            self.describe(),
            mask_url(self._root),
            self._lease,
            self._dead_topic or "none",
        )

    def _batcher(self, name: str, send: Any) -> Batcher[Any]:
        return Batcher(
            f"{self.describe()}: {name}",
            send,
            describe=lambda entry: f"ack id {entry[0] if isinstance(entry, tuple) else entry}",
            # 1,000 ack ids (a few hundred bytes each at most) stay under the 512 KB limit
            batching=Batching(linger=0.005, max_batch=MAX_IDS),
            error_type=ProviderError,
            classify=self._classify,
            logger=logger,
            scrub=lambda exc: scrub(str(exc), self._secrets),
        )

    def _classify(self, exc: Exception) -> Failure | None:
        if isinstance(exc, ApiError) and 400 <= exc.status < 500 and exc.status not in (408, 429):
            return Failure(f"{exc.status} {scrub(exc.message, self._secrets)}", retry=False)
        return None

    async def _read_subscription(self, api: Api, *, create: bool) -> None:
        timeout = float(self._timeouts.connect)
        try:
            info = await api.get(self._sub_path, timeout)
        except ApiError as exc:
            if exc.status != 404:
                raise
            if not create:
                raise ConfigurationError(
                    f"{self.describe()}: not found; create it (gcloud pubsub subscriptions "
                    f"create {self.subscription} --topic TOPIC --project {self.project}) or "
                    "pass create=True with topic=..."
                ) from None
            info = await self._create(api, timeout)
        if (info.get("pushConfig") or {}).get("pushEndpoint"):
            raise ConfigurationError(
                f"{self.describe()}: a push subscription; loafer pulls: use a pull subscription"
            )
        self._lease = float(info.get("ackDeadlineSeconds") or 10)
        self._topic = _short(info.get("topic")) or self._topic
        self._ordering = bool(info.get("enableMessageOrdering"))
        policy = info.get("deadLetterPolicy") or {}
        self._has_policy = bool(policy.get("deadLetterTopic"))
        if self._dead_topic is None and policy.get("deadLetterTopic"):
            self._dead_topic = str(policy["deadLetterTopic"])
        if self._dead_topic is not None:
            await api.get(self._dead_topic, timeout)  # a missing one: 404, said at start

    async def _create(self, api: Api, timeout: float) -> dict[str, Any]:
        setup = self.settings.setup
        if not setup.topic:
            raise ConfigurationError(
                f"PubSubProvider(create=True): {self.describe()} is missing; give topic=... "
                "(the topic to subscribe) to create it"
            )
        topic = api.path("topics", setup.topic)
        await _create(api, topic, {}, timeout)
        body: dict[str, Any] = {
            "topic": topic,
            "ackDeadlineSeconds": setup.ack_deadline,
            **dict(setup.options),
        }
        if setup.message_ordering:
            body["enableMessageOrdering"] = True
        if self._dead_topic is not None:
            await _create(api, self._dead_topic, {}, timeout)
            # a topic without a subscription keeps nothing: one of the same name keeps them
            keep = self._dead_topic.replace("/topics/", "/subscriptions/")
            await _create(api, keep, {"topic": self._dead_topic}, timeout)
            body["deadLetterPolicy"] = {
                "deadLetterTopic": self._dead_topic,
                "maxDeliveryAttempts": setup.max_delivery_attempts,
            }
        await _create(api, self._sub_path, body, timeout)
        logger.info("%s: created (topic %s)", self.describe(), topic)
        return await api.get(self._sub_path, timeout)

    # -- consuming ------------------------------------------------------------------------

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        """Return up to ``max_messages`` deliveries, polling up to ``poll_timeout``.

        Cancelling it hands nothing out and loses nothing: a pull under way finishes and
        what it returns is kept, for the next fetch or given back by ``stop_fetching`` or
        ``close``."""
        if self._closed or max_messages < 1:
            return []
        if not self._started or self._api is None:
            raise ProviderError(f"{self.describe()}: fetch before start")
        self._paused = False
        if not self._buffer:
            await self._gather(max_messages)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(self._timeouts.poll)
        pause = min(0.01, self.settings.poll_interval)
        while not self._buffer and not self._closed and not self._paused:
            # what is free now (at least what was asked): the rest waits in the buffer
            # for the next fetch, which comes at once: outstanding + buffered <= capacity
            free = max(max_messages, self._capacity - self._outstanding)
            self._buffer = await self._pull(min(free, self.settings.max_messages))
            left = deadline - loop.time()
            if self._buffer or left <= 0:
                break
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, self.settings.poll_interval)
        out, self._buffer = self._buffer[:max_messages], self._buffer[max_messages:]
        self._outstanding += len(out)
        return [self._delivery(r) for r in out]

    async def _gather(self, asked: int) -> None:
        """Asked for less than half the capacity while deliveries are out: wait (up to
        :data:`GATHER`) for half to be free, so that one pull takes more."""
        if asked * 2 >= self._capacity or self._outstanding <= self._capacity // 2:
            return
        self._freed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GATHER):
                await self._freed.wait()

    async def _pull(self, count: int) -> list[Received]:
        api = self._api
        assert api is not None
        timeout = float(self._timeouts.publish)
        task = asyncio.get_running_loop().create_task(
            api.pull(self._sub_path, count, timeout), name=f"loafer:pubsub:{self.subscription}:pull"
        )
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)
        try:
            with map_exceptions(lambda exc: self._error("pulling messages", exc)):
                return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._keep)  # the pull is answered anyway: keep it
            raise

    def _keep(self, task: asyncio.Task[list[Received]]) -> None:
        if not task.cancelled() and task.exception() is None:
            self._buffer.extend(task.result())

    def _delivery(self, received: Received) -> Delivery:
        attempt = received.attempt
        metadata = {
            "headers": received.attributes,
            "attributes": received.attributes,
            "message_id": received.message_id,
            "attempt": attempt,
            "queue": self.subscription,
            "subscription": self.subscription,
            "topic": self._topic,
            "ordering_key": received.ordering_key,
            "publish_time": received.published,
        }
        return Delivery(
            raw=received.data,
            body=received.data,
            message_id=received.message_id,
            metadata=metadata,
            attempt=attempt,
            ordering_key=received.ordering_key,
            token=_Token(received.ack_id),
        )

    async def stop_fetching(self) -> None:
        """A drain begins (:class:`~loafer_core.provider.Drainable`): nack back what was
        pulled and not handed out, at once. A later ``fetch`` pulls again."""
        if self._closed or not self._started:
            return
        self._paused = True
        if self._reads:  # a cancelled fetch's pull, still answering: its messages too
            await asyncio.wait(set(self._reads), timeout=float(self._timeouts.close))
        await self._give_back()

    async def _give_back(self) -> None:
        """nack the buffer (available again at once; Pub/Sub counts an attempt)."""
        left, self._buffer = self._buffer, []
        api = self._api
        if not left or api is None:
            return
        try:
            for start in range(0, len(left), MAX_IDS):
                ids = [r.ack_id for r in left[start : start + MAX_IDS]]
                await api.modify_ack_deadline(self._sub_path, ids, 0, float(self._timeouts.close))
            self.released_unhandled += len(left)
        except Exception as exc:  # a cancellation passes through
            logger.warning(
                "%s: %d unhandled messages not given back (%s); Pub/Sub redelivers them "
                "after the ack deadline",
                self.describe(),
                len(left),
                self._error("nack", exc),
            )

    # -- settling -------------------------------------------------------------------------

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Settle one delivery (see the module docstring for the mapping). A failure
        raises ProviderError and leaves the delivery unsettled (safe to send again)."""
        token = delivery.token
        if not isinstance(token, _Token):
            raise ProviderError(f"{self.describe()}: {delivery!r} was not fetched from Pub/Sub")
        if token.settled:
            logger.debug(
                "%s: message %s settled again (%r)", self.describe(), delivery.message_id, outcome
            )
            return
        token.settling = True
        kind = outcome.kind
        if kind is OutcomeKind.ACCEPT:
            self._ack(token)  # queued: no call to wait for
        else:
            with map_exceptions(
                lambda exc: self._error(
                    f"settling message {delivery.message_id} with {outcome!r}", exc
                )
            ):
                await self._settle_other(delivery, token, outcome)
        token.settled = True
        self._outstanding -= 1
        if self._outstanding <= self._capacity // 2:
            self._freed.set()

    async def _settle_other(self, delivery: Delivery, token: _Token, outcome: Outcome) -> None:
        kind = outcome.kind
        if kind is OutcomeKind.REJECT:
            await self._reject(delivery, token, outcome.reason or "rejected")
            return
        delay = outcome.delay if kind is OutcomeKind.RETRY else None
        seconds = min(math.ceil(delay), MAX_ACK_DEADLINE) if delay and delay > 0 else 0
        extension = token.extension
        if extension is not None and not extension.done():
            await asyncio.wait([extension])  # an extension never lands after this
        await self._modack(token.ack_id, seconds)

    def _ack(self, token: _Token) -> None:
        """Queue the acknowledgement: sent within the batcher's linger with others (and
        retried), flushed by ``close``. An ack lost with the process (or after its
        retries) means a redelivery, never a loss."""
        acks = self._acks
        if acks is None or self._api is None:
            raise ProviderError(f"{self.describe()}: not started")
        acks.add(token.ack_id)

    async def _modack(self, ack_id: str, seconds: int) -> None:
        modacks = self._modacks
        if modacks is None:
            raise ProviderError(f"{self.describe()}: not started")
        await asyncio.shield(modacks.submit((ack_id, seconds)))

    async def _reject(self, delivery: Delivery, token: _Token, reason: str) -> None:
        if self._dead_topic is None:
            logger.warning(
                "%s: message %s rejected (%s) with no dead-letter topic: acknowledged, dropped",
                self.describe(),
                delivery.message_id,
                _one_line(reason),
            )
        else:
            if token.dead is None:
                token.dead = asyncio.get_running_loop().create_task(
                    self._publish_dead(delivery, reason)
                )
            try:
                await asyncio.shield(token.dead)
            except Exception:
                token.dead = None  # not surely published: a settle sent again publishes again
                raise
        self._ack(token)

    async def _publish_dead(self, delivery: Delivery, reason: str) -> None:
        api, topic = self._api, self._dead_topic
        assert api is not None and topic is not None
        attributes = dict(delivery.metadata.get("attributes") or {})
        attributes.update(
            dead_headers(
                attributes, reason=reason, attempts=delivery.attempt, origin=self.subscription
            )
        )
        attributes[REJECT_REASON_ATTRIBUTE] = _one_line(reason)
        attributes[REJECTED_FROM_ATTRIBUTE] = self._sub_path
        attributes[ORIGINAL_MESSAGE_ID_ATTRIBUTE] = delivery.message_id or ""
        body = delivery.raw if isinstance(delivery.raw, bytes) else b""
        if not body and not attributes:
            attributes[REJECT_REASON_ATTRIBUTE] = "rejected"
        await api.publish(
            topic, [encode_message(body, attributes, None)], float(self._timeouts.publish)
        )

    async def _send_acks(self, ack_ids: Sequence[str]) -> dict[int, Failure]:
        api = self._api
        if api is None:
            return dict.fromkeys(range(len(ack_ids)), Failure("closed", retry=False))
        await api.acknowledge(self._sub_path, ack_ids, float(self._timeouts.publish))
        return {}

    async def _send_modacks(self, entries: Sequence[tuple[str, int]]) -> dict[int, Failure]:
        api = self._api
        if api is None:
            return dict.fromkeys(range(len(entries)), Failure("closed", retry=False))
        groups: dict[int, list[int]] = {}
        for index, (_, seconds) in enumerate(entries):
            groups.setdefault(seconds, []).append(index)
        failures: dict[int, Failure] = {}
        for seconds, indexes in groups.items():
            ids = [entries[i][0] for i in indexes]
            try:
                await api.modify_ack_deadline(
                    self._sub_path, ids, seconds, float(self._timeouts.publish)
                )
            except Exception as exc:  # a cancellation passes through
                failure = self._classify(exc) or Failure(scrub(str(exc), self._secrets), retry=True)
                failures.update(dict.fromkeys(indexes, failure))
        return failures

    async def extend_leases(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Push back the ack deadline of each unsettled delivery by ``seconds`` (whole
        seconds, at most 600), in one call."""
        modacks = self._modacks
        if modacks is None:
            return
        whole = max(1, min(int(seconds), MAX_ACK_DEADLINE))
        futures = []
        for delivery in deliveries:
            token = delivery.token
            if isinstance(token, _Token) and not token.settling:
                token.extension = modacks.submit((token.ack_id, whole))
                futures.append(token.extension)
        if futures:
            with map_exceptions(lambda exc: self._error("extending leases", exc)):
                await asyncio.shield(asyncio.gather(*futures))

    # -- health and shutdown --------------------------------------------------------------

    async def health(self) -> bool:
        """True while started and not closed (the API is stateless HTTP)."""
        return self._started and not self._closed

    async def close(self) -> None:
        """Wait for pulls under way, nack back what was not handed out, flush acks, close
        the HTTP session. Idempotent, bounded by ``close_timeout``."""
        if self._closed:
            return
        self._closed = True
        try:
            async with asyncio.timeout(float(self._timeouts.close)):
                if self._reads:
                    await asyncio.wait(set(self._reads))
                await self._give_back()
                for batcher in (self._acks, self._modacks):
                    if batcher is not None:
                        await batcher.flush()
        except TimeoutError:
            logger.warning(
                "%s: close took more than close_timeout (%ss); what was not acknowledged "
                "is redelivered after the ack deadline",
                self.describe(),
                self._timeouts.close,
            )
            for batcher in (self._acks, self._modacks):
                if batcher is not None:
                    _, tasks = batcher.abort()
                    await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            api, self._api = self._api, None
            if api is not None:
                await api.close()


async def _create(api: Api, path: str, body: dict[str, Any], timeout: float) -> None:
    """Create a topic or subscription; one that exists already is fine."""
    try:
        await api.put(path, body, timeout)
    except ApiError as exc:
        if exc.status != 409:
            raise
