"""The SQS provider: consumes one SQS queue through one long-lived aiobotocore client.

Mapping of outcomes (see ``docs/providers/sqs.md``):

- ``ACCEPT`` -> ``DeleteMessageBatch`` (gathered for a short linger, 10 per call).
- ``RETRY(delay)`` -> ``ChangeMessageVisibilityBatch`` to ``delay`` seconds;
  ``RETRY()`` leaves the message to its visibility timeout (``retry_visibility`` to
  change that, e.g. ``0`` for an immediate redelivery).
- ``RELEASE`` -> visibility 0 (SQS still counts the receive).
- ``REJECT(reason)`` -> sent to the dead-letter queue (from the queue's RedrivePolicy,
  or ``dead_letter_queue``) with the reason, then deleted; with no dead-letter queue,
  deleted and logged at ERROR.

Deliveries carry the SQS message dict as ``raw`` (never mutated), ``attempt`` from
``ApproximateReceiveCount``, and on FIFO queues the ``MessageGroupId`` as
``ordering_key``: the dispatcher handles a group's messages one at a time and releases
a group's later messages when one is retried, so none overtakes it (SQS itself holds
back the rest of a group while one of its messages is in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.outcome import Outcome, OutcomeKind
from loafer_core.provider import Capabilities, Delivery, Description, Support
from loafer_sqs import _closing, _describe
from loafer_sqs._batch import MAX_BATCH, Batcher, Failure, failures_in
from loafer_sqs._client import open_client
from loafer_sqs._dead_letter import Reject, dead_letter_entry
from loafer_sqs._queue_setup import QueueSetup, read_queue_setup
from loafer_sqs._timeouts import CONNECT_TIMEOUT, READ_MARGIN, Timeouts
from loafer_sqs.errors import is_missing_queue, mask, protect, translate_error
from loafer_sqs.settings import MAX_VISIBILITY, SQSSettings, settings_of

__all__ = ["MAX_VISIBILITY", "SQSProvider"]

logger = logging.getLogger("loafer_sqs")

#: Kept clear of the visibility ceiling (clock skew, request latency).
_VISIBILITY_MARGIN = 60


@dataclass(eq=False, slots=True)
class Receipt:
    """Provider-private settlement handle of a delivery (``Delivery.token``)."""

    handle: str
    message_id: str
    received_at: float
    group: str | None = None
    extended_at: float = 0.0
    settled: bool = False
    #: the lease extension in flight, if any: a settle's visibility change waits for it
    extension: asyncio.Future[None] | None = None

    def visibility_cap(self, now: float) -> int:
        """Longest visibility (seconds) still allowed for this message."""
        return int(MAX_VISIBILITY - _VISIBILITY_MARGIN - (now - self.received_at))


@dataclass(eq=False, slots=True)
class _Visibility:
    receipt: Receipt
    seconds: int
    #: a lease extension: dropped if its delivery is settled before it is (re)sent
    extension: bool = False


def _settings(
    settings: SQSSettings | str | None, options: Mapping[str, Any] | None, flat: dict[str, Any]
) -> SQSSettings:
    """Loafer 2.x's arguments (``queue`` or ``queue_name=``, the ``options`` dict, the
    client options) or one :class:`SQSSettings`, as settings."""
    if options is not None:
        if "options" in flat:
            raise ConfigurationError("SQSProvider: 'options' given twice (positional and keyword)")
        flat["options"] = options
    if isinstance(settings, SQSSettings):
        return settings_of(SQSSettings, "SQSProvider", settings, flat)  # refuses more
    queue_name = flat.pop("queue_name", None)
    if flat.get("queue") is None:  # Loafer's queue=None: queue_name=, if given
        flat.pop("queue", None)
        if queue_name is not None and settings is None:
            flat["queue"] = queue_name
    if settings is None and "queue" not in flat:
        raise ConfigurationError("SQSProvider needs a queue name or URL (queue=...)")
    return settings_of(SQSSettings, "SQSProvider", settings, flat)


def _headers(message_attributes: Mapping[str, Any]) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    for name, value in message_attributes.items():
        if not isinstance(value, Mapping):
            continue
        if "StringValue" in value:
            headers[name] = value["StringValue"]
        elif "BinaryValue" in value:
            headers[name] = value["BinaryValue"]
    return headers


class SQSProvider:
    """Consume one SQS queue (standard or FIFO).

    Takes one :class:`~loafer_sqs.settings.SQSSettings` (its docstring lists the
    settings), or the same values as Loafer 2.x took them: ``SQSProvider(queue,
    options=None, *, queue_name=None, dead_letter_queue=None, retry_visibility=None,
    settle_linger=0.02, receive_linger=0.05, close_grace=1.0, close_timeout=10.0,
    **client_options)``, where ``options`` are the ``ReceiveMessage`` options
    (``WaitTimeSeconds``, ...) and ``client_options`` the :class:`AWSClient` ones
    (``region_name``, ``endpoint_url``, credentials, ...; the standard AWS chain
    otherwise). A wrong value is a ConfigurationError naming it; credentials never
    appear in reprs, logs or errors.
    """

    default_translator: Any
    #: The longest :meth:`verify` may take (seconds), connecting and reading included.
    verify_timeout: float = 20.0

    settings_type = SQSSettings

    def __init__(
        self,
        settings: SQSSettings | str | None = None,
        options: Mapping[str, Any] | None = None,
        /,
        **flat: Any,
    ) -> None:
        self.settings = _settings(settings, options, flat)
        self._configure(self.settings)
        self._init_state()

    def _configure(self, settings: SQSSettings) -> None:
        """The settings as the attributes the provider reads."""
        self._queue = settings.queue
        #: the queue as shown in reprs, logs and errors (a URL's credentials masked)
        self._name = mask(settings.queue)
        self._receive_options = dict(settings.receive_options)
        self._wait_time: int = self._receive_options.get("WaitTimeSeconds", 20)
        self._max_batch: int = self._receive_options.get("MaxNumberOfMessages", MAX_BATCH)
        self._dead_letter_option = settings.dead_letter_queue
        self._retry_visibility = settings.retry_visibility
        self._linger = settings.lingers.settle
        self._receive_linger = settings.lingers.receive
        self._close_grace = settings.closing.grace
        self._close_timeout = float(settings.closing.timeout)
        self._timeouts = Timeouts.for_wait(self._wait_time)
        self._client_options = settings.client
        protect()  # botocore's loggers get their filter before anything logs
        self._fifo = self._queue.rstrip("/").endswith(".fifo")

        from loafer_sqs.translator import SQSMessageTranslator

        self.default_translator = SQSMessageTranslator()

    def _init_state(self) -> None:
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._queue_url: str | None = None
        self._dlq_url: str | None = None
        self._lease = 30.0
        self._capacity = 0
        self._started = False
        self._verified = False
        self._closed = False
        #: start()'s opening (client, queue set-up) while it runs: close() cancels it
        self._opening: asyncio.Task[None] | None = None
        self._buffer: list[Delivery] = []
        self._receivers: dict[asyncio.Task[None], int] = {}
        self._error: BaseException | None = None
        self._changed = asyncio.Event()
        self._completions = 0
        self._outstanding = 0
        self._settled = 0
        self._deferred: set[asyncio.Task[None]] = set()
        self._parallel = 1
        self._max_parallel = 1
        self._deleter: Batcher[Receipt] | None = None
        self._visibility: Batcher[_Visibility] | None = None
        self._rejecter: Batcher[Reject] | None = None

    # -- introspection -------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"SQSProvider(queue={self._name!r}, client={self._client_options!r})"

    def describe(self) -> str:
        """A short description for logs: ``sqs:<queue>``."""
        return f"sqs:{self._name}"

    def description(self) -> Description:
        """The queue, the endpoint (no credential) and the AsyncAPI bindings: see
        :class:`~loafer_core.provider.Describable`."""
        shown = self._name or mask(str(self._queue))
        dead_letter = self._dead_letter_option
        return _describe.provider(
            shown, self._client_options, dead_letter if isinstance(dead_letter, str) else None
        )

    @property
    def queue_url(self) -> str | None:
        """The queue's URL, once started."""
        return self._queue_url

    @property
    def dead_letter_queue_url(self) -> str | None:
        """Where ``REJECT`` sends messages, once started (``None``: nowhere)."""
        return self._dlq_url

    @property
    def fifo(self) -> bool:
        """True for a FIFO queue."""
        return self._fifo

    @property
    def capabilities(self) -> Capabilities:
        """Delayed retry, attempt counting and lease extension natively; dead-lettering
        by send-then-delete (``NONE`` once started or verified if the queue has no
        dead-letter queue); ordering keys on FIFO queues. ``RELEASE`` is counted by SQS."""
        if self._started or self._verified:
            dead_letter = Support.EMULATED if self._dlq_url else Support.NONE
        else:
            dead_letter = Support.NONE if self._dead_letter_option is False else Support.EMULATED
        return Capabilities(
            delayed_retry=Support.NATIVE,
            dead_letter=dead_letter,
            attempt_count=Support.NATIVE,
            release_uncounted=Support.NONE,
            ordering_keys=Support.NATIVE if self._fifo else Support.NONE,
            lease_extension=Support.NATIVE,
            max_retry_delay=float(MAX_VISIBILITY - _VISIBILITY_MARGIN),
            # a plain RETRY waits out the visibility timeout (Loafer's behaviour), unless
            # retry_visibility=0 makes it immediate
            retry_waits=self._retry_visibility != 0,
        )

    @property
    def lease_duration(self) -> float:
        """The visibility timeout a received message starts with (seconds)."""
        return self._lease

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, capacity: int) -> None:
        """Open the client, resolve the queue (and its dead-letter queue), check it exists.

        A closed provider cannot start again: :class:`ConfigurationError` at once (a
        set-up error, which stops a manager rather than being retried for ever).
        """
        if self._closed:
            raise ConfigurationError(
                f"{self.describe()}: provider already closed; create a new one "
                f"(a closed SQSProvider cannot be started again)"
            )
        if self._started:
            return
        self._capacity = max(1, int(capacity))
        receives = math.ceil(self._capacity / self._max_batch)
        if self._opening is not None:
            raise ProviderError(f"{self.describe()}: start() is already running")
        # a task of its own, so that close() can stop it without cancelling our caller
        opening = asyncio.get_running_loop().create_task(self._open(receives))
        self._opening = opening
        try:
            await opening
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and (task is None or not task.cancelling()):
                raise self._closed_while_starting() from None
            raise
        finally:
            self._opening = None
        if self._closed:  # close() came as the opening ended
            stack, self._stack = self._stack, None
            self._client = None
            await _closing.release([], stack, "SQS")
            raise self._closed_while_starting()
        self._deleter = Batcher(
            f"DeleteMessageBatch on {self._name}",
            self._send_deletes,
            describe=lambda r: f"message {r.message_id}",
            linger=self._linger,
            error_type=ProviderError,
        )
        self._visibility = Batcher(
            f"ChangeMessageVisibilityBatch on {self._name}",
            self._send_visibility,
            describe=lambda v: f"message {v.receipt.message_id} (visibility {v.seconds}s)",
            linger=self._linger,
            error_type=ProviderError,
        )
        self._rejecter = Batcher(
            f"dead-lettering from {self._name}",
            self._send_rejects,
            describe=lambda r: f"message {r.delivery.message_id} (reason {r.reason!r})",
            linger=self._linger,
            error_type=ProviderError,
            weigh=Reject.weight,
        )
        self._started = True
        logger.debug(
            "consuming %s (fifo=%s, visibility=%ss, dead-letter=%s)",
            mask(self._queue_url),
            self._fifo,
            self._lease,
            mask(self._dlq_url),
        )

    async def _open(self, receives: int) -> None:
        """Open the client and read the queue's set-up; on any failure (or cancellation:
        a start cancelled, or a close() during start) the client is closed again."""
        stack = contextlib.AsyncExitStack()
        try:
            self._client = await open_client(
                "sqs",
                self._client_options,
                stack,
                max_pool_connections=receives + 16,
                timeouts=self._timeouts,
            )
            # what the user's config leaves in force bounds each receive
            self._timeouts = Timeouts.of(self._client.meta.config)
            setup = await self._read_setup(self._client)
            self._apply(setup)
            self._max_parallel = 1 if self._fifo else receives
            self._parallel = self._max_parallel
        except BaseException:
            await stack.aclose()
            self._client = None
            raise
        self._stack = stack

    def _closed_while_starting(self) -> ConfigurationError:
        return ConfigurationError(f"{self.describe()}: closed while starting")

    async def _read_setup(self, client: Any) -> QueueSetup:
        return await read_queue_setup(
            client,
            self._queue,
            name=self._name,
            dead_letter=self._dead_letter_option,
            where=self._client_options,
        )

    def _apply(self, setup: QueueSetup) -> None:
        """Take in what the queue's set-up says (start and verify)."""
        self._queue_url = setup.url
        self._fifo = setup.fifo or self._fifo
        self._lease = setup.visibility(self._receive_options.get("VisibilityTimeout"))
        self._dlq_url = setup.dead_letter_url

    async def verify(self) -> None:
        """Check the queue as ``start`` would, receiving nothing.

        On a client of its own, closed before it returns (also when cancelled):
        ``GetQueueUrl`` (unless a URL was given) and ``GetQueueAttributes``, then the
        dead-letter queue's URL (``dead_letter_queue``, else the ``RedrivePolicy``
        target). No ``ReceiveMessage``: no message is made invisible or counted. Then
        :attr:`capabilities` says whether REJECT has a dead-letter queue, and
        :attr:`lease_duration` is the queue's visibility timeout. A missing queue or
        dead-letter queue, refused or missing credentials are a ConfigurationError; an
        endpoint that does not answer within :attr:`verify_timeout` a ProviderError.
        """
        stack = contextlib.AsyncExitStack()
        try:
            async with asyncio.timeout(self.verify_timeout):
                client = await open_client(
                    "sqs",
                    self._client_options,
                    stack,
                    max_pool_connections=1,
                    timeouts=Timeouts(CONNECT_TIMEOUT, READ_MARGIN),
                )
                setup = await self._read_setup(client)
        except TimeoutError:
            raise ProviderError(
                f"{self.describe()}: no answer within {self.verify_timeout:g}s "
                f"(endpoint: {self._client_options!r})"
            ) from None
        finally:
            await _closing.release([], stack, "SQS")
        self._apply(setup)
        self._verified = True

    async def close(self, timeout: float | None = None) -> None:
        """Stop receiving, release buffered messages, flush settlements, close the client.

        Takes at most ``timeout`` or ``close_timeout`` seconds, whichever is shorter;
        past that, what is still unsent is given up and logged (those messages come back
        after their visibility timeout). Cancelled by its caller's own deadline, it gives
        up the same way: the client, its connections and its tasks are released anyway.
        """
        if self._closed:
            return
        self._closed = True
        self._changed.set()
        if self._opening is not None:
            # a start() on its way: stop it (its client is closed as it ends)
            self._opening.cancel()
            await asyncio.wait({self._opening}, timeout=_closing.CANCEL_GRACE)
        if not self._started:
            return
        bound = _closing.budget(self._close_timeout, timeout)
        try:
            async with asyncio.timeout(bound):
                await self._wind_down()
        except TimeoutError:
            logger.warning("closing %s took longer than %.1fs: giving up", self._name, bound)
        finally:
            await self._release()

    async def _wind_down(self) -> None:
        receivers = list(self._receivers)
        if receivers:
            # Receives that already got messages come back at once; give them a moment
            # so their messages are released below rather than left invisible. Long
            # polls on an empty queue are cut short.
            await asyncio.wait(receivers, timeout=self._close_grace)
            for task in receivers:
                task.cancel()
            await asyncio.gather(*receivers, return_exceptions=True)
        await self._settle_deferred()
        assert self._visibility is not None
        for delivery in self._buffer:
            receipt: Receipt = delivery.token
            receipt.settled = True
            self._visibility.add(_Visibility(receipt, 0))
        self._buffer.clear()
        for batcher in (self._rejecter, self._deleter, self._visibility):
            if batcher is not None:
                await batcher.flush()

    async def _release(self) -> None:
        """Give up whatever is left, cancel every task, close the client."""
        tasks = [*self._receivers, *self._deferred]
        for task in tasks:
            task.cancel()
        unsent = 0
        for batcher in (self._rejecter, self._deleter, self._visibility):
            if batcher is not None:
                dropped, cancelled = batcher.abort()
                unsent += dropped
                tasks.extend(cancelled)
        if unsent or self._buffer:
            logger.warning(
                "%s closed with %d settlement(s) not sent and %d received message(s) not "
                "released: those messages come back after their visibility timeout",
                self._name,
                unsent,
                len(self._buffer),
            )
        self._buffer.clear()
        stack, self._stack = self._stack, None
        self._client = None
        await _closing.release(tasks, stack, "SQS")

    async def flush(self) -> None:
        """Wait until every settlement queued so far has been sent (or given up)."""
        await self._settle_deferred()
        for batcher in (self._rejecter, self._deleter, self._visibility):
            if batcher is not None:
                await batcher.flush()

    async def health(self) -> bool:
        """True when the queue answers ``GetQueueAttributes`` within one attempt's time
        (connect and read timeouts: a silent endpoint is unhealthy within seconds)."""
        if not self._started or self._closed:
            return False
        try:
            async with asyncio.timeout(self._timeouts.attempt):
                await self._client.get_queue_attributes(
                    QueueUrl=self._queue_url, AttributeNames=["QueueArn"]
                )
        except Exception:
            return False
        return True

    async def backlog(self) -> int | None:
        """The queue's ``ApproximateNumberOfMessages`` (visible messages; SQS's estimate),
        from one ``GetQueueAttributes`` bounded like :meth:`health`; ``None`` when not
        running or unanswered."""
        if not self._started or self._closed:
            return None
        try:
            async with asyncio.timeout(self._timeouts.attempt):
                answer = await self._client.get_queue_attributes(
                    QueueUrl=self._queue_url, AttributeNames=["ApproximateNumberOfMessages"]
                )
            return int(answer["Attributes"]["ApproximateNumberOfMessages"])
        except Exception as exc:  # a cancellation passes through
            logger.debug("%s: backlog not read: %s", self.describe(), type(exc).__name__)
            return None

    # -- receiving -----------------------------------------------------------------------

    def _check_running(self) -> None:
        if not self._started:
            raise ProviderError("SQSProvider.fetch called before start()")
        if self._closed:
            raise ProviderError("SQSProvider is closed")

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        """Return up to ``max_messages`` deliveries, long polling when none are buffered.

        Keeps enough ``ReceiveMessage`` calls in flight to cover ``max_messages`` (10
        messages each; several calls when more than 10 are wanted). A receive of fewer
        than 10 waits up to ``receive_linger`` for settlements to free more capacity, so
        a busy route keeps receiving full batches. Cancelling a fetch loses nothing:
        received messages stay buffered for the next fetch, and are released at
        :meth:`close`.
        """
        self._check_running()
        if max_messages <= 0:
            return []
        start = time.monotonic()
        deadline = start + self._wait_time + 10
        linger_until = start + self._receive_linger
        completions = self._completions
        settled = self._settled
        while True:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            taken = self._take(max_messages)
            if taken:
                return taken
            if self._completions != completions:
                return []  # a receive came back empty: let the caller look again
            now = time.monotonic()
            lingering = now < linger_until and self._outstanding > 0
            wanted = max_messages + (self._settled - settled)
            deferred = self._launch(wanted, partial=not lingering)
            timeout = deadline - now
            if deferred:
                timeout = min(timeout, linger_until - now)
            elif timeout <= 0:
                return []
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, timeout))
            self._check_running()

    def _take(self, limit: int) -> list[Delivery]:
        if not self._buffer:
            return []
        taken = self._buffer[:limit]
        del self._buffer[:limit]
        self._outstanding += len(taken)
        return taken

    def _launch(self, wanted: int, *, partial: bool) -> bool:
        """Start receives for ``wanted`` messages; True if a partial one was deferred."""
        if self._fifo and self._receivers:
            # One receive at a time on FIFO queues: two concurrent receives could come
            # back out of order, and the buffer must keep each group's order.
            return False
        in_flight = sum(self._receivers.values())
        room = wanted - in_flight - len(self._buffer)
        while room >= self._max_batch and len(self._receivers) < self._parallel:
            self._spawn_receive(self._max_batch)
            room -= self._max_batch
            if self._fifo:
                return False
        if room > 0 and not self._receivers:
            if not partial:
                return True
            self._spawn_receive(room)
        return False

    def _spawn_receive(self, size: int) -> None:
        task = asyncio.get_running_loop().create_task(self._receive(size))
        self._receivers[task] = size

    async def _receive(self, size: int) -> None:
        task = asyncio.current_task()
        params: dict[str, Any] = {
            "QueueUrl": self._queue_url,
            "MaxNumberOfMessages": size,
            "WaitTimeSeconds": self._wait_time,
            "MessageSystemAttributeNames": ["All"],
            "MessageAttributeNames": list(
                self._receive_options.get("MessageAttributeNames", ["All"])
            ),
        }
        if "VisibilityTimeout" in self._receive_options:
            params["VisibilityTimeout"] = self._receive_options["VisibilityTimeout"]
        try:
            started = time.monotonic()
            # one attempt's worth of time: botocore would retry a silent endpoint for
            # minutes, and a long poll that outlives its wait means the endpoint is gone
            async with asyncio.timeout(self._timeouts.attempt):
                response = await self._client.receive_message(**params)
            messages = response.get("Messages", []) or []
            # Several receives in flight only pay off while they come back full: on a
            # thin queue they would split what arrives into small batches (more calls
            # per message, no more throughput), so fall back to one until they fill.
            if len(messages) >= size:
                self._parallel = min(self._parallel + 1, self._max_parallel)
            else:
                self._parallel = 1
            now = time.monotonic()
            for message in messages:
                self._buffer.append(self._delivery(message, now))
            if not messages and self._wait_time < 1:
                # No long polling: do not spin on an empty queue.
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self._error = ProviderError(
                f"receiving from {self._name}: no answer in {self._timeouts.attempt:.0f}s "
                f"(WaitTimeSeconds {self._wait_time}): the endpoint is unreachable or silent"
            )
        except Exception as exc:
            if is_missing_queue(exc):
                self._error = ConfigurationError(f"SQS queue {self._name!r} no longer exists")
            else:
                self._error = translate_error(exc, f"receiving from {self._name}")
        finally:
            if task is not None:
                self._receivers.pop(task, None)
            self._completions += 1
            self._changed.set()

    def _delivery(self, message: Mapping[str, Any], now: float) -> Delivery:
        attributes = message.get("Attributes", {}) or {}
        message_attributes = message.get("MessageAttributes", {}) or {}
        group = attributes.get("MessageGroupId") if self._fifo else None
        try:
            attempt: int | None = int(attributes["ApproximateReceiveCount"])
        except (KeyError, ValueError):
            attempt = None
        receipt = Receipt(
            handle=str(message["ReceiptHandle"]),
            message_id=str(message.get("MessageId")),
            received_at=now,
            group=group,
            extended_at=now,
        )
        metadata = {
            "MessageId": message.get("MessageId"),
            "ReceiptHandle": message.get("ReceiptHandle"),
            "MD5OfBody": message.get("MD5OfBody"),
            "Attributes": dict(attributes),
            "MessageAttributes": dict(message_attributes),
            "headers": _headers(message_attributes),
            "queue_url": self._queue_url,
            "message_id": receipt.message_id,
            "attempt": attempt,
            "queue": self._name,
        }
        return Delivery(
            raw=message,
            body=message.get("Body"),
            message_id=receipt.message_id,
            metadata=metadata,
            attempt=attempt,
            ordering_key=group,
            token=receipt,
        )

    # -- settling ------------------------------------------------------------------------

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Queue the settlement; it is sent within ``settle_linger`` (batched).

        Failures are retried, then logged; they never raise here: an unsettled SQS
        message comes back after its visibility timeout (at-least-once).
        """
        receipt = delivery.token
        if not isinstance(receipt, Receipt):
            raise ValueError(f"{delivery!r} was not fetched by an SQSProvider")
        if not self._started:
            raise ProviderError("SQSProvider.settle called before start()")
        if receipt.settled:
            logger.debug("%r settled twice; ignoring %r", delivery, outcome)
            return
        receipt.settled = True
        self._outstanding -= 1
        self._settled += 1
        if self._closed:
            logger.warning(
                "settling %r with %r after close: left to its timeout", delivery, outcome
            )
            return
        assert self._deleter is not None
        assert self._visibility is not None
        assert self._rejecter is not None
        kind = outcome.kind
        if kind is OutcomeKind.ACCEPT:
            self._deleter.add(receipt)
        elif kind is OutcomeKind.RELEASE:
            self._change_visibility(_Visibility(receipt, 0))
        elif kind is OutcomeKind.RETRY:
            delay = outcome.delay if outcome.delay is not None else self._retry_visibility
            if delay is not None:
                now = time.monotonic()
                seconds = max(0, min(math.ceil(delay), receipt.visibility_cap(now)))
                self._change_visibility(_Visibility(receipt, seconds))
        elif kind is OutcomeKind.REJECT:
            reason = outcome.reason or "rejected"
            if self._dlq_url is None:
                logger.error(
                    "message %s from %s rejected (%s) and deleted: the queue has no "
                    "dead-letter queue",
                    delivery.message_id,
                    self._name,
                    reason,
                )
                self._deleter.add(receipt)
            else:
                self._rejecter.add(Reject(delivery, reason))
        self._changed.set()

    def _change_visibility(self, change: _Visibility) -> None:
        """Queue a settle's visibility change, after the delivery's lease extension if one
        is in flight (sent after it, the extension would hide the message again)."""
        assert self._visibility is not None
        extension = change.receipt.extension
        if extension is None or extension.done():
            self._visibility.add(change)
            return
        task = asyncio.get_running_loop().create_task(self._change_after(extension, change))
        self._deferred.add(task)
        task.add_done_callback(self._deferred.discard)

    async def _change_after(self, extension: asyncio.Future[None], change: _Visibility) -> None:
        with contextlib.suppress(Exception):
            await asyncio.shield(extension)
        if self._visibility is not None:
            self._visibility.add(change)

    async def _settle_deferred(self) -> None:
        """Wait for visibility changes waiting on an extension to be queued."""
        while self._deferred:
            await asyncio.gather(*list(self._deferred), return_exceptions=True)

    async def extend_leases(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Set each delivery's visibility to ``seconds`` from now (batched, 10 per call).

        Never beyond SQS's 12-hour ceiling; settled deliveries are skipped. Per-entry
        failures are logged (the message may come back: at-least-once); a failed call
        raises :class:`ProviderError` after retries.
        """
        if not self._started or self._closed or self._visibility is None:
            return
        now = time.monotonic()
        futures: list[asyncio.Future[None]] = []
        for delivery in deliveries:
            receipt = delivery.token
            if not isinstance(receipt, Receipt) or receipt.settled:
                continue
            cap = receipt.visibility_cap(now)
            wanted = min(math.ceil(seconds), cap)
            if wanted <= 0:
                logger.warning(
                    "message %s reached the 12-hour visibility limit; it can no longer be "
                    "extended and will be redelivered",
                    delivery.message_id,
                )
                continue
            receipt.extended_at = now
            future = self._visibility.submit(_Visibility(receipt, wanted, extension=True))
            receipt.extension = future
            futures.append(future)
        if futures:
            results = await asyncio.gather(*futures, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise ProviderError(f"extending {len(errors)} lease(s) failed: {errors[0]}")

    # -- batch calls ---------------------------------------------------------------------

    async def _send_deletes(self, receipts: Sequence[Receipt]) -> dict[int, Failure]:
        response = await self._client.delete_message_batch(
            QueueUrl=self._queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": r.handle} for i, r in enumerate(receipts)],
        )
        return failures_in(response, len(receipts))

    async def _send_visibility(self, entries: Sequence[_Visibility]) -> dict[int, Failure]:
        # an extension (first try or retry) of a delivery settled meanwhile is dropped
        send = [i for i, e in enumerate(entries) if not (e.extension and e.receipt.settled)]
        if not send:
            return {}
        response = await self._client.change_message_visibility_batch(
            QueueUrl=self._queue_url,
            Entries=[
                {
                    "Id": str(n),
                    "ReceiptHandle": entries[i].receipt.handle,
                    "VisibilityTimeout": entries[i].seconds,
                }
                for n, i in enumerate(send)
            ],
        )
        failures = failures_in(response, len(send))
        return {send[n]: failure for n, failure in failures.items()}

    async def _send_rejects(self, rejects: Sequence[Reject]) -> dict[int, Failure]:
        fifo = self._dlq_url is not None and self._dlq_url.endswith(".fifo")
        response = await self._client.send_message_batch(
            QueueUrl=self._dlq_url,
            Entries=[
                dead_letter_entry(i, r, fifo=fifo, origin=self._name) for i, r in enumerate(rejects)
            ],
        )
        failed = failures_in(response, len(rejects))
        assert self._deleter is not None
        for i, reject in enumerate(rejects):
            if i not in failed:
                # Sent first, deleted second: a crash in between gives a duplicate in the
                # dead-letter queue, never a loss.
                self._deleter.add(reject.delivery.token)
        return failed
