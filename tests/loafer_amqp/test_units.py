"""Unit tests of the provider's own logic, without a broker: the outcome mapping onto
proton dispositions (with a fake delivery) and the broker profile detection."""

from __future__ import annotations

from typing import Any

import pytest
from proton import Delivery as ProtonDelivery

from loafer_amqp import AMQPProvider, AMQPPublisher
from loafer_amqp._bridge import mask_url
from loafer_amqp.provider import MAX_REASON, _ReceiverClient
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import OutcomeKind

pytestmark = pytest.mark.amqp


class FakeLocal:
    def __init__(self) -> None:
        self.condition: Any = None
        self.failed = False


class FakeDelivery:
    def __init__(self) -> None:
        self.local = FakeLocal()
        self.state: Any = None
        self.settled = False

    def update(self, state: Any) -> None:
        self.state = state

    def settle(self) -> None:
        self.settled = True


_made: list[_ReceiverClient] = []


@pytest.fixture(autouse=True)
def _close_pipes() -> Any:
    yield
    while _made:
        _made.pop()._close_pipe()  # the EventInjector's pipe (no reactor runs here)


def client(profile: str = "auto") -> _ReceiverClient:
    provider = AMQPProvider("amqp://h", "/amq/queue/q", broker=profile)
    made = _ReceiverClient(provider, provider._connection, "/amq/queue/q", 5, profile)  # type: ignore[arg-type]
    _made.append(made)
    return made


def settle(c: _ReceiverClient, kind: OutcomeKind, reason: str | None = None) -> FakeDelivery:
    dlv = FakeDelivery()
    c._unsettled[1] = dlv  # type: ignore[assignment]
    c._apply(1, dlv, kind, reason)  # type: ignore[arg-type]
    assert dlv.settled and 1 not in c._unsettled
    return dlv


def test_outcomes_map_to_dispositions() -> None:
    c = client()
    assert settle(c, OutcomeKind.ACCEPT).state == ProtonDelivery.ACCEPTED
    assert settle(c, OutcomeKind.RELEASE).state == ProtonDelivery.RELEASED
    rejected = settle(c, OutcomeKind.REJECT, "bad " * 1000)
    assert rejected.state == ProtonDelivery.REJECTED
    assert rejected.local.condition.name == "loafer:rejected"
    assert len(rejected.local.condition.description) == MAX_REASON


def test_retry_is_released_unless_the_broker_takes_modified() -> None:
    c = client("auto")
    assert settle(c, OutcomeKind.RETRY).state == ProtonDelivery.RELEASED
    g = client("generic")
    retried = settle(g, OutcomeKind.RETRY)
    assert retried.state == ProtonDelivery.MODIFIED
    assert retried.local.failed is True


@pytest.mark.parametrize(
    ("profile", "properties", "modified"),
    [
        ("auto", {"product": "RabbitMQ", "version": "3.10.8"}, False),
        ("auto", {"product": "RabbitMQ", "version": "3.10.11"}, True),
        ("auto", {"product": "RabbitMQ", "version": "3.12.0"}, True),
        ("rabbitmq", {"product": "RabbitMQ", "version": "3.9.29"}, False),
        ("auto", {"product": "apache-activemq-artemis"}, False),
        ("auto", {}, False),
        ("generic", {"product": "apache-activemq-artemis"}, True),
        ("generic", {"product": "RabbitMQ", "version": "3.11.0"}, True),
    ],
)
def test_profile_detection(profile: str, properties: dict[str, Any], modified: bool) -> None:
    c = client(profile)
    assert c.check_peer(properties) is None
    assert c.use_modified is modified


def test_generic_profile_refuses_an_old_rabbitmq() -> None:
    c = client("generic")
    error = c.check_peer({"product": "RabbitMQ", "version": "3.10.8"})
    assert isinstance(error, ConfigurationError)
    assert c.use_modified is False  # even if the error is ignored (after a reconnect)
    assert "broker='rabbitmq'" in str(error)


def test_stale_settlements_are_ignored() -> None:
    c = client()
    dlv = FakeDelivery()
    c._unsettled[7] = dlv  # type: ignore[assignment]
    c.settle_delivery(7, c.generation - 1, OutcomeKind.ACCEPT, None, None)
    assert not dlv.settled  # from a dead session: never settled on the live one
    c.settle_delivery(8, c.generation, OutcomeKind.ACCEPT, None, None)  # unknown: ignored
    assert not dlv.settled


class FakeLink:
    is_receiver = True
    state = 0

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.advanced = False

    def recv(self, n: int) -> bytes:
        return self.data[:n]

    def advance(self) -> bool:
        self.advanced = True
        return True


class FakeIncoming(FakeDelivery):
    readable = True
    partial = False
    aborted = False

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.link = FakeLink(data)
        self.pending = len(data)


class FakeEvent:
    def __init__(self, delivery: FakeIncoming) -> None:
        self.delivery = delivery
        self.link = delivery.link
        self.message: Any = None


def test_an_undecodable_transfer_is_rejected_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    from proton import Message

    from loafer_amqp._bridge import _SafeIncoming

    real_decode = Message.decode

    def decode(self: Message, data: bytes) -> None:
        if data.startswith(b"BAD"):  # proton's decoder is lenient: make one that fails
            raise ValueError("malformed section")
        real_decode(self, data)

    monkeypatch.setattr(Message, "decode", decode)

    seen: list[Any] = []

    class Delegate:
        def on_message(self, event: Any) -> None:
            seen.append(event.message.body)

    handler = _SafeIncoming(False, Delegate())
    bad = FakeIncoming(b"BAD transfer")
    handler.on_delivery(FakeEvent(bad))
    assert bad.state == ProtonDelivery.REJECTED and bad.settled
    assert bad.local.condition.name == "loafer:undecodable"
    assert bad.link.advanced and seen == []

    good = FakeIncoming(Message(body="fine").encode())
    handler.on_delivery(FakeEvent(good))
    assert seen == ["fine"] and not good.settled  # handed on, settled later by the provider


@pytest.mark.parametrize("sep", ["#", "/", "?", "@"])
@pytest.mark.parametrize("cls", [AMQPProvider, AMQPPublisher])
def test_a_password_with_unencoded_special_characters_never_shows(sep: str, cls: Any) -> None:
    secret = "Xy7s3cr"
    url = f"amqp://guest:{secret}{sep}tail@127.0.0.1:5672"
    try:
        provider = cls(url, "/amq/queue/x")
    except ConfigurationError as exc:
        assert secret not in str(exc), str(exc)
    else:
        assert secret not in repr(provider)
        assert secret not in mask_url(url)


def test_a_numeric_password_prefix_never_shows_in_the_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        AMQPProvider("amqp://guest:424242/tail@127.0.0.1:5672", "/amq/queue/x")
    assert "424242" not in str(info.value), str(info.value)


@pytest.mark.parametrize("heartbeat", [-5, float("nan"), float("inf"), True, "60"])
def test_a_bad_heartbeat_is_a_configuration_error(heartbeat: Any) -> None:
    # it used to kill the reactor thread at start: a ProviderError retried for ever
    with pytest.raises(ConfigurationError, match="heartbeat"):
        AMQPProvider("amqp://guest:guest@127.0.0.1:5672", "/amq/queue/x", heartbeat=heartbeat)


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, "[" * 100_000])
def test_translator_turns_every_decoding_failure_into_a_translation_error(body: Any) -> None:
    from loafer_amqp import AMQPTranslator
    from loafer_core.errors import TranslationError

    with pytest.raises(TranslationError):
        AMQPTranslator().translate(body)
