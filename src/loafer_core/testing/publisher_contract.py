"""The publisher conformance suite: subclass :class:`PublisherContract` to test a publisher.

What every publisher promises, whatever its broker: ``start()`` then ``close()`` (close
idempotent and bounded in time, a publish after it refused clearly), bytes, ``str`` and
JSON bodies and their headers arriving intact, ``publish`` returning only once the broker
has the message, concurrent publishes all arriving, typed objects published as JSON with
their type in a header, a broker's refusal raised as
:class:`~loafer_core.errors.PublishRefused`, and no secret in ``repr``, ``str``, errors or
logs. Give it a way to make your publisher for a destination, to create and delete
destinations, and to read what arrived::

    class TestMyPublisherContract(PublisherContract):
        async def make_publisher(self, destination):
            return MyPublisher(destination, url=...)

        async def create_destination(self, destination): ...
        async def delete_destination(self, destination): ...
        async def take(self, destination):  # what arrived since the last call
            return [Arrived(body, headers) for body, headers in ...]

        # optional: a publisher whose publishes the broker refuses (else skipped)
        async def make_refusing_publisher(self, destination): ...
        # optional: a publisher holding a secret (else skipped)
        async def make_publisher_with_secret(self, destination): ...

Delayed publish (``publish(..., delay=seconds)`` / ``at=datetime``) is checked from what
the publisher declares: its ``delay_support`` (:class:`~loafer_core.provider.Support`;
none declared: ``NONE``) and ``max_delay``. Where it takes delays, a delayed message
must not arrive before its delay and must arrive after it, ``at=`` too; where it takes
none, or beyond ``max_delay``, the publish raises
:class:`~loafer_core.errors.ConfigurationError` and sends nothing. A naive ``at`` is
refused everywhere. For an emulated delay (the message is in the destination at once,
its :data:`~loafer_core.kit.NOT_BEFORE` header read by the consumer), :meth:`take`'s
messages are held back by the kit until their header says they are due, as the
consumer does.

Every test runs in its own event loop (``asyncio.run``) on a fresh destination, bounded by
``timeout``. The tests are plain (sync) pytest methods: no asyncio pytest plugin is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from loafer_core.errors import ConfigurationError, LoaferError, PublishRefused
from loafer_core.kit import not_before
from loafer_core.provider import Support
from loafer_core.testing._eventually import eventually

__all__ = ["Arrived", "ContractOrder", "PublisherContract"]

Scenario = Callable[[str], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class Arrived:
    """One message as it arrived at the destination: its body as bytes and its
    application headers (values as ``str``)."""

    body: bytes
    headers: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ContractOrder:
    """The typed object the typed-publish test publishes (a plain dataclass)."""

    order_id: int
    note: str


class PublisherContract:
    """Conformance tests for a publisher. Subclass it as ``Test...`` and fill in the hooks."""

    #: Bound on each test, in seconds.
    timeout: ClassVar[float] = 60.0
    #: How long a published message may take to be readable through :meth:`take`.
    arrival_timeout: ClassVar[float] = 15.0
    #: How long ``close()`` may take, with nothing unusual going on.
    close_within: ClassVar[float] = 10.0
    #: How long after ``publish`` returned its message may take to be readable through
    #: :meth:`take` (0: at once, the broker confirmed it). Raise it only for a read path
    #: that lags behind the broker (an SNS subscription's queue).
    visible_within: ClassVar[float] = 0.0
    #: How long the kit watches for a message that must not arrive.
    absence_window: ClassVar[float] = 0.5
    #: Publishes made at once in the concurrency test.
    concurrent_publishes: ClassVar[int] = 50
    #: The body ``make_refusing_publisher``'s publisher is given to publish.
    refused_body: ClassVar[Any] = b'{"refused": true}'
    #: The delay the delayed-publish tests ask for, in seconds.
    publish_delay: ClassVar[float] = 1.5
    #: How early a delayed message may arrive (clock granularity of the broker), seconds.
    delay_tolerance: ClassVar[float] = 0.1
    #: The start of the name of each destination a test makes (a unique suffix follows).
    destination_prefix: ClassVar[str] = "loafer-pub-contract"

    # -- hooks ----------------------------------------------------------------------------

    async def make_publisher(self, destination: str) -> Any:
        """Return a new, unstarted publisher whose ``publish(body, headers=...)`` sends to
        ``destination``."""
        raise NotImplementedError

    async def create_destination(self, destination: str) -> None:
        """Create ``destination`` (a queue, a stream, a topic and a queue subscribed to it)."""

    async def delete_destination(self, destination: str) -> None:
        """Delete ``destination`` and what :meth:`create_destination` made for it."""

    async def take(self, destination: str) -> Sequence[Arrived]:
        """The messages that arrived at ``destination`` since the last call (each one
        returned once; none waiting: an empty sequence, soon)."""
        raise NotImplementedError

    async def make_refusing_publisher(self, destination: str) -> Any:
        """A publisher (unstarted) whose publish of :attr:`refused_body` the broker refuses
        (a nack, an unroutable message, a full queue rejecting publishes). Leave it out
        where the broker cannot refuse a message: the test is skipped, saying so."""
        raise NotImplementedError

    async def make_publisher_with_secret(self, destination: str) -> tuple[Any, str]:
        """A publisher (unstarted) configured with a secret (a password, a token, a key)
        and that secret. Best where ``start()`` or a publish then fails (a broker that
        refuses it, nothing listening at its address): the error is checked too. Leave
        it out for a publisher that holds no secret: the test is skipped."""
        raise NotImplementedError

    async def start(self, publisher: Any) -> None:
        """Open ``publisher``: ``start()``, the lifecycle every publisher shares."""
        start = getattr(publisher, "start", None)
        assert callable(start), (
            f"{type(publisher).__name__} has no start(): a publisher opens with start() "
            "and ends with close()"
        )
        await start()

    async def publish(
        self, publisher: Any, body: Any, headers: Mapping[str, str] | None = None
    ) -> Any:
        """Publish ``body`` to the publisher's destination."""
        return await publisher.publish(body, headers=headers)

    async def publish_delayed(
        self,
        publisher: Any,
        body: Any,
        *,
        delay: float | None = None,
        at: datetime | None = None,
    ) -> Any:
        """Publish ``body`` held back by ``delay`` seconds or until ``at``."""
        if at is not None:
            return await publisher.publish(body, at=at)
        return await publisher.publish(body, delay=delay)

    # -- machinery ------------------------------------------------------------------------

    def _run(self, scenario: Scenario) -> None:
        async def main() -> None:
            destination = f"{self.destination_prefix}-{uuid.uuid4().hex[:12]}"
            self._opened: list[Any] = []
            await self.create_destination(destination)
            try:
                async with asyncio.timeout(self.timeout):
                    await scenario(destination)
            finally:
                try:
                    for publisher in self._opened:
                        await _close_quietly(publisher, self.close_within)
                finally:
                    await self.delete_destination(destination)

        asyncio.run(main())

    async def _made(self, destination: str, *, started: bool = True) -> Any:
        publisher = await self.make_publisher(destination)
        self._opened.append(publisher)
        if started:
            await self.start(publisher)
        return publisher

    async def _arrivals(self, destination: str, count: int) -> list[Arrived]:
        """Take until ``count`` messages arrived (within ``arrival_timeout``)."""
        got: list[Arrived] = []

        async def enough() -> bool:
            got.extend(await self.take(destination))
            return len(got) >= count

        await eventually(
            enough,
            timeout=self.arrival_timeout,
            interval=0.05,
            what=f"{count} message(s) arriving at {destination!r} (got {len(got)})",
        )
        return got

    async def _one(self, destination: str) -> Arrived:
        got = await self._arrivals(destination, 1)
        assert len(got) == 1, f"one message published, {len(got)} arrived: {got!r}"
        return got[0]

    async def _nothing_arrives(self, destination: str) -> None:
        deadline = time.monotonic() + self.absence_window
        while True:
            got = list(await self.take(destination))
            assert not got, f"a message arrived that must not have: {got!r}"
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.05)

    # -- lifecycle ------------------------------------------------------------------------

    def test_start_then_close_twice(self) -> None:
        """``start()`` opens it, ``close()`` ends it, and a second ``close()`` is a no-op."""

        async def scenario(destination: str) -> None:
            publisher = await self._made(destination)
            await _bounded_close(publisher, self.close_within)
            await _bounded_close(publisher, self.close_within)

        self._run(scenario)

    def test_close_without_start_is_safe(self) -> None:
        async def scenario(destination: str) -> None:
            publisher = await self._made(destination, started=False)
            await _bounded_close(publisher, self.close_within)
            await _bounded_close(publisher, self.close_within)

        self._run(scenario)

    def test_close_after_publishing_is_bounded_in_time(self) -> None:
        """``close()`` after publishes returns within ``close_within``, and what was
        published arrived."""

        async def scenario(destination: str) -> None:
            publisher = await self._made(destination)
            for i in range(3):
                await self.publish(publisher, f'{{"closing": {i}}}'.encode())
            await _bounded_close(publisher, self.close_within)
            got = await self._arrivals(destination, 3)
            assert sorted(a.body for a in got) == [f'{{"closing": {i}}}'.encode() for i in range(3)]

        self._run(scenario)

    def test_a_publish_after_close_is_refused_clearly(self) -> None:
        """After ``close()``, ``publish`` raises a :class:`~loafer_core.errors.LoaferError`
        saying the publisher is closed (promptly), and sends nothing."""

        async def scenario(destination: str) -> None:
            publisher = await self._made(destination)
            await self.publish(publisher, b'{"before": "close"}')
            await _bounded_close(publisher, self.close_within)
            await self._one(destination)
            late = b'{"after": "close"}'
            try:
                async with asyncio.timeout(self.close_within):
                    await self.publish(publisher, late)
            except TimeoutError:
                raise AssertionError(
                    f"a publish after close() neither failed nor returned in {self.close_within}s"
                ) from None
            except LoaferError as exc:
                assert "closed" in str(exc).lower(), (
                    f"a publish after close() raised {type(exc).__name__}: {exc} "
                    "(the message should say the publisher is closed)"
                )
            except Exception as exc:
                raise AssertionError(
                    f"a publish after close() raised {type(exc).__name__}: {exc}, not a "
                    "LoaferError saying the publisher is closed"
                ) from exc
            else:
                raise AssertionError("a publish after close() succeeded: it should be refused")
            await self._nothing_arrives(destination)

        self._run(scenario)

    def test_a_first_publish_opens_an_unstarted_publisher(self) -> None:
        """Publishing before ``start()`` opens the publisher (the first publish of a
        forwarding route whose broker was down at start-up relies on it)."""

        async def scenario(destination: str) -> None:
            publisher = await self._made(destination, started=False)
            await self.publish(publisher, b'{"unstarted": true}')
            assert (await self._one(destination)).body == b'{"unstarted": true}'

        self._run(scenario)

    # -- bodies and headers ---------------------------------------------------------------

    def test_a_bytes_body_and_its_headers_arrive_intact(self) -> None:
        async def scenario(destination: str) -> None:
            publisher = await self._made(destination)
            body = "bytes: caf\u00e9 \u2713 {}".encode()
            headers = {"x-loafer-contract": "bytes", "x-second": "2 words"}
            await self.publish(publisher, body, headers)
            arrived = await self._one(destination)
            assert arrived.body == body
            _check_headers(arrived, headers)

        self._run(scenario)

    def test_a_str_body_arrives_as_utf8(self) -> None:
        async def scenario(destination: str) -> None:
            publisher = await self._made(destination)
            text = "text: na\u00efve \u00e9t\u00e9 \u20ac"
            await self.publish(publisher, text, {"x-loafer-contract": "str"})
            arrived = await self._one(destination)
            assert arrived.body == text.encode("utf-8")
            _check_headers(arrived, {"x-loafer-contract": "str"})

        self._run(scenario)

    def test_a_json_body_arrives_as_json(self) -> None:
        async def scenario(destination: str) -> None:
            publisher = await self._made(destination)
            content = {"n": 1, "text": "\u00e9", "items": [1, 2.5, None, True], "nested": {}}
            await self.publish(publisher, content, {"x-loafer-contract": "json"})
            arrived = await self._one(destination)
            assert json.loads(arrived.body) == content
            _check_headers(arrived, {"x-loafer-contract": "json"})

        self._run(scenario)

    def test_a_typed_object_arrives_as_json_naming_its_type(self) -> None:
        """A dataclass (as any typed object) is published as JSON with its type in the
        publisher's ``type_header``; skipped for a publisher without ``type_header``."""

        async def scenario(destination: str) -> None:
            publisher = await self._made(destination)
            if not hasattr(publisher, "type_header"):
                pytest.skip("the publisher has no type_header: typed publish not supported")
            await self.publish(publisher, ContractOrder(7, "typed"))
            arrived = await self._one(destination)
            assert json.loads(arrived.body) == {"order_id": 7, "note": "typed"}
            header = publisher.type_header
            if header:
                _check_headers(arrived, {header: "ContractOrder"})

        self._run(scenario)

    # -- confirms, refusals, concurrency --------------------------------------------------

    def test_a_publish_returns_once_the_broker_has_it(self) -> None:
        """When ``publish`` returns, the message is at the destination (confirmed, not
        merely written to a socket): readable at once (``visible_within``)."""

        async def scenario(destination: str) -> None:
            publisher = await self._made(destination)
            for i in range(3):
                body = f'{{"confirmed": {i}}}'.encode()
                await self.publish(publisher, body)
                deadline = time.monotonic() + self.visible_within
                got = list(await self.take(destination))
                while not any(a.body == body for a in got):
                    assert time.monotonic() < deadline, (
                        f"{body!r} was not at the destination as its publish returned "
                        f"(visible_within={self.visible_within}s): publish must wait for the "
                        f"broker's confirm; read {got!r}"
                    )
                    await asyncio.sleep(0.02)
                    got.extend(await self.take(destination))

        self._run(scenario)

    def test_a_refused_publish_raises_publish_refused(self) -> None:
        async def scenario(destination: str) -> None:
            try:
                publisher = await self.make_refusing_publisher(destination)
            except NotImplementedError:
                pytest.skip("no make_refusing_publisher(): the broker cannot refuse a message")
            self._opened.append(publisher)
            await self.start(publisher)
            with pytest.raises(PublishRefused):
                await self.publish(publisher, self.refused_body)

        self._run(scenario)

    def test_concurrent_publishes_all_arrive(self) -> None:
        async def scenario(destination: str) -> None:
            publisher = await self._made(destination)
            bodies = [f'{{"concurrent": {i}}}'.encode() for i in range(self.concurrent_publishes)]
            await asyncio.gather(*(self.publish(publisher, body) for body in bodies))
            got = await self._arrivals(destination, len(bodies))
            assert {a.body for a in got} == set(bodies)

        self._run(scenario)

    # -- delayed publish ------------------------------------------------------------------

    def test_a_delayed_message_arrives_after_its_delay_not_before(self) -> None:
        """``publish(..., delay=d)``: nothing arrives for ``d`` seconds, then it does."""

        async def scenario(destination: str) -> None:
            publisher = await self._delaying(destination)
            started = time.monotonic()
            await self.publish_delayed(publisher, b'{"delayed": 1}', delay=self.publish_delay)
            await self._held_back_then_arrives(destination, started, b'{"delayed": 1}')

        self._run(scenario)

    def test_a_message_published_at_a_time_arrives_then(self) -> None:
        """``publish(..., at=aware_datetime)`` holds the message back until then."""

        async def scenario(destination: str) -> None:
            publisher = await self._delaying(destination)
            started = time.monotonic()
            at = datetime.now(UTC) + timedelta(seconds=self.publish_delay)
            await self.publish_delayed(publisher, b'{"at": 1}', at=at)
            await self._held_back_then_arrives(destination, started, b'{"at": 1}')

        self._run(scenario)

    def test_a_naive_datetime_is_refused_and_nothing_sent(self) -> None:
        async def scenario(destination: str) -> None:
            publisher = await self._made(destination)
            naive = datetime.now() + timedelta(seconds=1)
            with pytest.raises(ConfigurationError, match="naive"):
                await self.publish_delayed(publisher, b'{"naive": 1}', at=naive)
            await self._nothing_arrives(destination)

        self._run(scenario)

    def test_a_refused_delay_raises_configuration_error_and_nothing_sent(self) -> None:
        """No delay declared: any delay is refused; else one beyond ``max_delay``."""

        async def scenario(destination: str) -> None:
            publisher = await self._made(destination)
            support = getattr(publisher, "delay_support", Support.NONE)
            limit = getattr(publisher, "max_delay", None)
            if support is not Support.NONE and limit is None:
                pytest.skip("the publisher takes any delay: nothing to refuse")
            too_long = 30.0 if limit is None else float(limit) + 1
            with pytest.raises(ConfigurationError, match="delay"):
                await self.publish_delayed(publisher, b'{"refused": "delay"}', delay=too_long)
            await self._nothing_arrives(destination)

        self._run(scenario)

    async def _delaying(self, destination: str) -> Any:
        publisher = await self._made(destination)
        if getattr(publisher, "delay_support", Support.NONE) is Support.NONE:
            pytest.skip(f"{type(publisher).__name__} declares no delayed publish")
        self._emulated = publisher.delay_support is Support.EMULATED
        return publisher

    async def _held_back_then_arrives(self, destination: str, started: float, body: bytes) -> None:
        early = self.publish_delay - self.delay_tolerance
        held: list[Arrived] = []
        while time.monotonic() - started < early * 0.8:
            held += await self.take(destination)
            due = [a for a in held if not_before(a.headers) is None] if self._emulated else held
            assert not due, f"a delayed message arrived after {time.monotonic() - started:.2f}s"
            await asyncio.sleep(0.05)
        got: list[Arrived] = []

        async def arrived() -> bool:
            held.extend(await self.take(destination))
            for a in list(held):
                if not self._emulated or not_before(a.headers) is None:
                    held.remove(a)
                    got.append(a)
            return bool(got)

        await eventually(
            arrived,
            timeout=self.publish_delay + self.arrival_timeout,
            interval=0.05,
            what=f"the delayed message arriving at {destination!r}",
        )
        took = time.monotonic() - started
        assert took >= early, f"the delayed message arrived after {took:.2f}s, before its delay"
        assert [a.body for a in got] == [body]

    # -- secrets --------------------------------------------------------------------------

    def test_secrets_stay_out_of_repr_errors_and_logs(self) -> None:
        async def scenario(destination: str) -> None:
            try:
                publisher, secret = await self.make_publisher_with_secret(destination)
            except NotImplementedError:
                pytest.skip("no make_publisher_with_secret(): the publisher holds no secret")
            self._opened.append(publisher)
            shown = [repr(publisher), str(publisher)]
            describe = getattr(publisher, "description", None)
            if callable(describe):
                shown.append(repr(describe()))
            for text in shown:
                assert secret not in text, f"the secret is shown: {text}"
            with _captured_logs() as records:
                try:
                    async with asyncio.timeout(self.timeout / 2):
                        await self.start(publisher)
                        await self.publish(publisher, b'{"secret": "test"}')
                except Exception as exc:
                    told = "".join(traceback.format_exception(exc))
                    assert secret not in told, f"the secret is in the error: {told}"
                finally:
                    await _close_quietly(publisher, self.close_within)
            logged = "\n".join(records)
            assert secret not in logged, f"the secret is in the logs: {logged}"

        self._run(scenario)


def _check_headers(arrived: Arrived, headers: Mapping[str, str]) -> None:
    got = {name: arrived.headers.get(name) for name in headers}
    assert got == dict(headers), f"headers arrived as {dict(arrived.headers)!r}, sent {headers!r}"


async def _bounded_close(publisher: Any, within: float) -> None:
    started = time.monotonic()
    try:
        async with asyncio.timeout(within):
            result = publisher.close()
            if inspect.isawaitable(result):
                await result
    except TimeoutError:
        raise AssertionError(f"close() took longer than {within}s") from None
    took = time.monotonic() - started
    assert took <= within, f"close() took {took:.2f}s (bound {within}s)"


async def _close_quietly(publisher: Any, within: float) -> None:
    # clean-up after a test that already failed, or one that checked its close
    with contextlib.suppress(Exception):
        await _bounded_close(publisher, within)


class _captured_logs:
    """Every record logged (at any level) while inside, formatted."""

    def __enter__(self) -> list[str]:
        self.records: list[str] = []
        self.handler = _ListHandler(self.records)
        self.root = logging.getLogger()
        self.level = self.root.level
        self.root.addHandler(self.handler)
        self.root.setLevel(logging.DEBUG)
        return self.records

    def __exit__(self, *exc: object) -> None:
        self.root.removeHandler(self.handler)
        self.root.setLevel(self.level)


class _ListHandler(logging.Handler):
    def __init__(self, records: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append(self.format(record))
        except Exception:  # a record that cannot be formatted still must not leak
            self.records.append(repr(record.__dict__))
