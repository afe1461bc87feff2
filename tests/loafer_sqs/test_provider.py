"""SQSProvider against moto: receiving, settling, dead-lettering, leases, closing."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from typing import Any

import pytest

from loafer_core.errors import ConfigurationError
from loafer_core.outcome import ACCEPT, REJECT, RELEASE, RETRY
from loafer_core.provider import Delivery, LeaseExtender, Provider, Support
from loafer_sqs import SQSProvider
from loafer_sqs.provider import Receipt
from tests.loafer_sqs.conftest import CallCounter, MakeQueue, queue_counts, send_bodies

pytestmark = pytest.mark.sqs


async def fetch_n(provider: SQSProvider, n: int, timeout: float = 10.0) -> list[Delivery]:
    """Fetch until ``n`` deliveries arrived (bounded)."""
    got: list[Delivery] = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            got.extend(await provider.fetch(n - len(got)))
    return got


async def test_is_a_provider_and_lease_extender(client_options: dict[str, Any]) -> None:
    provider = SQSProvider("anything", **client_options)
    assert isinstance(provider, Provider)
    assert isinstance(provider, LeaseExtender)
    caps = provider.capabilities
    assert caps.delayed_retry is Support.NATIVE
    assert caps.attempt_count is Support.NATIVE
    assert caps.lease_extension is Support.NATIVE
    assert caps.release_uncounted is Support.NONE
    assert caps.ordering_keys is Support.NONE
    assert SQSProvider("orders.fifo", **client_options).capabilities.ordering_keys


async def test_secrets_not_in_repr(client_options: dict[str, Any]) -> None:
    provider = SQSProvider("q", aws_secret_access_key="very-secret", endpoint_url="http://x")
    assert "very-secret" not in repr(provider)
    assert "http://x" in repr(provider)


async def test_unknown_options_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="WaitTimeSecond"):
        SQSProvider("q", {"WaitTimeSecond": 3})
    with pytest.raises(ConfigurationError, match="bogus"):
        SQSProvider("q", bogus=1)
    with pytest.raises(ConfigurationError, match="MaxNumberOfMessages"):
        SQSProvider("q", {"MaxNumberOfMessages": 11})
    with pytest.raises(ConfigurationError):
        SQSProvider(None)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"options": {"MessageAttributeNames": "All"}}, "MessageAttributeNames"),
        ({"options": {"AttributeNames": ["All", 1]}}, "AttributeNames"),
        ({"options": {"VisibilityTimeout": True}}, "VisibilityTimeout"),
        ({"retry_visibility": "30"}, "retry_visibility"),
        ({"retry_visibility": 50_000}, "retry_visibility"),
        ({"settle_linger": "0.1"}, "settle_linger"),
        ({"receive_linger": -1}, "receive_linger"),
        ({"close_grace": float("nan")}, "close_grace"),
    ],
)
def test_wrong_option_types_are_configuration_errors_naming_the_option(
    kwargs: dict[str, Any], named: str
) -> None:
    # a string where boto wants a list was silently spread into ["A", "l", "l"]; a str
    # number raised a raw TypeError; a bool passed for an int
    with pytest.raises(ConfigurationError, match=named):
        SQSProvider("q", region_name="us-east-1", **kwargs)


async def test_missing_queue_is_configuration_error(client_options: dict[str, Any]) -> None:
    provider = SQSProvider("loafer-sqs-does-not-exist", **client_options)
    with pytest.raises(ConfigurationError, match="does not exist"):
        await provider.start(10)
    await provider.close()


async def test_missing_region_is_configuration_error(
    sqs_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    provider = SQSProvider(
        "q", endpoint_url=sqs_endpoint, aws_access_key_id="a", aws_secret_access_key="b"
    )
    with pytest.raises(ConfigurationError):
        await provider.start(1)
    await provider.close()


async def test_receive_accept_round_trip(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    await sqs.send_message(
        QueueUrl=url,
        MessageBody='{"hello": "world"}',
        MessageAttributes={"trace": {"DataType": "String", "StringValue": "abc"}},
    )
    name = url.rsplit("/", 1)[-1]
    provider = SQSProvider(name, **client_options)
    await provider.start(10)
    try:
        assert provider.queue_url == url
        [delivery] = await fetch_n(provider, 1)
        raw_before = copy.deepcopy(delivery.raw)
        assert delivery.body == '{"hello": "world"}'
        assert delivery.attempt == 1
        assert delivery.ordering_key is None
        assert delivery.metadata["headers"] == {"trace": "abc"}
        assert delivery.metadata["MessageId"] == delivery.message_id
        assert "SentTimestamp" in delivery.metadata["Attributes"]
        translated = provider.default_translator.translate(delivery.raw)
        assert translated["content"] == {"hello": "world"}
        assert "Body" not in translated["metadata"]
        assert delivery.raw == raw_before, "the raw message was mutated"
        await provider.settle(delivery, ACCEPT)
        await provider.flush()
        assert await queue_counts(sqs, url) == (0, 0)
    finally:
        await provider.close()


async def test_queue_given_by_url(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    await sqs.send_message(QueueUrl=url, MessageBody='"x"')
    provider = SQSProvider(url, **client_options)
    await provider.start(1)
    try:
        [delivery] = await fetch_n(provider, 1)
        await provider.settle(delivery, ACCEPT)
    finally:
        await provider.close()
    assert await queue_counts(sqs, url) == (0, 0)


async def test_receive_sizes_follow_max_messages(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    sizes: list[int] = []

    def record(params: dict[str, Any], **kwargs: Any) -> None:
        sizes.append(params["MaxNumberOfMessages"])

    from aiobotocore.session import get_session

    session = get_session()
    session.register("provide-client-params.sqs.ReceiveMessage", record)
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, session=session, **client_options)
    await provider.start(25)
    try:
        # two full receives in flight; the remaining 5 wait until they are back
        assert list(await provider.fetch(25)) == []
        assert sizes == [10, 10]
    finally:
        await provider.close()
    sizes.clear()
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, session=session, **client_options)
    await provider.start(3)
    try:
        assert list(await provider.fetch(3)) == []
        assert sizes == [3]
    finally:
        await provider.close()


async def test_empty_queue_no_busy_loop_without_long_polling(
    make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    counter = CallCounter()
    provider = SQSProvider(url, {"WaitTimeSeconds": 0}, session=counter.session(), **client_options)
    await provider.start(5)
    try:
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            assert list(await provider.fetch(5)) == []
        assert counter.count("ReceiveMessage") <= 3
    finally:
        await provider.close()


async def test_retry_with_delay_and_attempts(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    await sqs.send_message(QueueUrl=url, MessageBody='"retry me"')
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, **client_options)
    await provider.start(1)
    try:
        [first] = await fetch_n(provider, 1)
        assert first.attempt == 1
        settled_at = time.monotonic()
        await provider.settle(first, RETRY(2))
        [again] = await fetch_n(provider, 1, timeout=15)
        assert time.monotonic() - settled_at >= 1.5
        assert again.attempt == 2
        assert again.message_id == first.message_id
        await provider.settle(again, ACCEPT)
    finally:
        await provider.close()


async def test_retry_without_delay_leaves_visibility_timeout(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue(visibility=3)
    await sqs.send_message(QueueUrl=url, MessageBody='"later"')
    counter = CallCounter()
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, session=counter.session(), **client_options)
    await provider.start(1)
    try:
        [first] = await fetch_n(provider, 1)
        settled_at = time.monotonic()
        await provider.settle(first, RETRY())
        await provider.flush()
        assert counter.count("ChangeMessageVisibilityBatch") == 0
        [again] = await fetch_n(provider, 1, timeout=15)
        assert time.monotonic() - settled_at >= 2.0
        await provider.settle(again, ACCEPT)
    finally:
        await provider.close()


async def test_retry_visibility_zero_option(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue(visibility=30)
    await sqs.send_message(QueueUrl=url, MessageBody='"now"')
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, retry_visibility=0, **client_options)
    await provider.start(1)
    try:
        [first] = await fetch_n(provider, 1)
        await provider.settle(first, RETRY())
        [again] = await fetch_n(provider, 1, timeout=5)
        assert again.attempt == 2
        await provider.settle(again, ACCEPT)
    finally:
        await provider.close()


async def test_release_is_visible_at_once(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue(visibility=30)
    await sqs.send_message(QueueUrl=url, MessageBody='"release"')
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, **client_options)
    await provider.start(1)
    try:
        [first] = await fetch_n(provider, 1)
        await provider.settle(first, RELEASE)
        [again] = await fetch_n(provider, 1, timeout=5)
        assert again.message_id == first.message_id
        await provider.settle(again, ACCEPT)
    finally:
        await provider.close()


async def test_reject_goes_to_dead_letter_queue(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue(dlq=True)
    attributes = {
        "trace": {"DataType": "String", "StringValue": "t-1"},
        "n": {"DataType": "Number", "StringValue": "7"},
    }
    await sqs.send_message(QueueUrl=url, MessageBody='{"bad": 1}', MessageAttributes=attributes)
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, **client_options)
    await provider.start(1)
    try:
        assert provider.dead_letter_queue_url is not None
        assert provider.dead_letter_queue_url.endswith("-dlq")
        assert provider.capabilities.dead_letter is Support.EMULATED
        [delivery] = await fetch_n(provider, 1)
        await provider.settle(delivery, REJECT("no good"))
        await provider.flush()
    finally:
        await provider.close()
    assert await queue_counts(sqs, url) == (0, 0)
    response = await sqs.receive_message(
        QueueUrl=provider.dead_letter_queue_url,
        MessageAttributeNames=["All"],
        WaitTimeSeconds=1,
    )
    [dead] = response["Messages"]
    assert dead["Body"] == '{"bad": 1}'
    got = dead["MessageAttributes"]
    assert got["trace"]["StringValue"] == "t-1"
    assert got["n"] == {"DataType": "Number", "StringValue": "7"}
    assert got["loafer.reject_reason"]["StringValue"] == "no good"
    assert got["loafer.source_message_id"]["StringValue"] == delivery.message_id


async def test_reject_without_dead_letter_queue_deletes_and_logs(
    sqs: Any,
    make_queue: MakeQueue,
    client_options: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = await make_queue()
    await sqs.send_message(QueueUrl=url, MessageBody='"poison"')
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, **client_options)
    await provider.start(1)
    try:
        assert provider.capabilities.dead_letter is Support.NONE
        [delivery] = await fetch_n(provider, 1)
        with caplog.at_level(logging.ERROR, logger="loafer_sqs"):
            await provider.settle(delivery, REJECT("broken beyond repair"))
        await provider.flush()
    finally:
        await provider.close()
    assert await queue_counts(sqs, url) == (0, 0)
    [record] = [r for r in caplog.records if r.name == "loafer_sqs"]
    assert record.levelno == logging.ERROR
    assert delivery.message_id in record.getMessage()
    assert "broken beyond repair" in record.getMessage()


async def test_explicit_dead_letter_queue(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    dead_url = await make_queue()
    await sqs.send_message(QueueUrl=url, MessageBody='"to the side"')
    provider = SQSProvider(
        url, {"WaitTimeSeconds": 1}, dead_letter_queue=dead_url.rsplit("/", 1)[-1], **client_options
    )
    await provider.start(1)
    try:
        [delivery] = await fetch_n(provider, 1)
        await provider.settle(delivery, REJECT("side"))
    finally:
        await provider.close()
    assert await queue_counts(sqs, dead_url) == (1, 0)
    assert await queue_counts(sqs, url) == (0, 0)


async def test_deletes_are_batched_ten_at_most(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    await send_bodies(sqs, url, [json.dumps(i) for i in range(25)])
    counter = CallCounter()
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, session=counter.session(), **client_options)
    await provider.start(25)
    try:
        deliveries = await fetch_n(provider, 25)
        assert sorted(json.loads(d.body) for d in deliveries) == list(range(25))
        for delivery in deliveries:
            await provider.settle(delivery, ACCEPT)
        await provider.flush()
        assert counter.count("DeleteMessageBatch") == 3
        assert counter.largest_batch() <= 10
    finally:
        await provider.close()
    assert await queue_counts(sqs, url) == (0, 0)


async def test_bad_receipt_is_logged_not_raised(
    make_queue: MakeQueue, client_options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    url = await make_queue()
    provider = SQSProvider(url, **client_options)
    await provider.start(1)
    try:
        fake = Delivery(
            raw={}, message_id="m-1", token=Receipt("not-a-handle", "m-1", time.monotonic())
        )
        with caplog.at_level(logging.ERROR, logger="loafer_sqs"):
            await provider.settle(fake, ACCEPT)
            await provider.flush()
        assert any("m-1" in r.getMessage() for r in caplog.records)
    finally:
        await provider.close()


async def test_cancelled_fetch_loses_nothing(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    provider = SQSProvider(url, {"WaitTimeSeconds": 5}, **client_options)
    await provider.start(1)
    try:
        fetching = asyncio.create_task(provider.fetch(1))
        await asyncio.sleep(0.2)  # let the long poll reach the server
        fetching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetching
        await sqs.send_message(QueueUrl=url, MessageBody='"kept"')
        [delivery] = await fetch_n(provider, 1)
        assert delivery.body == '"kept"'
        await provider.settle(delivery, ACCEPT)
    finally:
        await provider.close()


async def test_close_releases_buffered_messages(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue(visibility=60)
    await send_bodies(sqs, url, [json.dumps(i) for i in range(20)])
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, **client_options)
    await provider.start(20)
    handed: list[Delivery] = []
    try:
        handed.extend(await provider.fetch(20))
        assert handed
        # whatever else the receives brought in stays buffered (not handed out)
        await provider.settle(handed[0], ACCEPT)
        for delivery in handed[1:]:
            await provider.settle(delivery, RELEASE)
    finally:
        await provider.close()
    await provider.close()  # idempotent
    visible, in_flight = await queue_counts(sqs, url)
    assert (visible, in_flight) == (19, 0)


async def test_extend_leases_keeps_message_invisible(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue(visibility=2)
    await sqs.send_message(QueueUrl=url, MessageBody='"slow"')
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, **client_options)
    await provider.start(1)
    try:
        assert provider.lease_duration == 2
        [delivery] = await fetch_n(provider, 1)
        await provider.extend_leases([delivery], 10)
        await asyncio.sleep(3)  # longer than the queue's visibility timeout
        assert await queue_counts(sqs, url) == (0, 1)
        await provider.settle(delivery, ACCEPT)
        await provider.extend_leases([delivery], 10)  # settled: skipped
    finally:
        await provider.close()
    assert await queue_counts(sqs, url) == (0, 0)


async def test_fifo_metadata(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue(fifo=True)
    await sqs.send_message(
        QueueUrl=url, MessageBody='"a"', MessageGroupId="g-1", MessageDeduplicationId="d-1"
    )
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, **client_options)
    await provider.start(1)
    try:
        assert provider.fifo
        assert provider.capabilities.ordering_keys is Support.NATIVE
        [delivery] = await fetch_n(provider, 1)
        assert delivery.ordering_key == "g-1"
        assert delivery.attempt == 1
        await provider.settle(delivery, ACCEPT)
    finally:
        await provider.close()


async def test_fetch_after_close_raises(
    make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    from loafer_core.errors import ProviderError

    url = await make_queue()
    provider = SQSProvider(url, **client_options)
    await provider.start(1)
    await provider.close()
    with pytest.raises(ProviderError):
        await provider.fetch(1)


@pytest.mark.parametrize("started", [True, False])
async def test_a_closed_provider_refuses_to_start_again(
    make_queue: MakeQueue, client_options: dict[str, Any], started: bool
) -> None:
    url = await make_queue()
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, **client_options)
    if started:
        await provider.start(1)
    await provider.close()
    with pytest.raises(ConfigurationError, match="closed; create a new one"):
        async with asyncio.timeout(1):
            await provider.start(1)


async def test_a_stopped_manager_served_again_fails_at_once(
    make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    from loafer_core import Manager
    from loafer_sqs import SQSRoute

    url = await make_queue()
    route = SQSRoute(
        url, {"options": {"WaitTimeSeconds": 1}, **client_options}, handler=lambda m, md: True
    )
    manager = Manager([route], shutdown_timeout=5)
    serving = asyncio.create_task(manager.serve())
    await asyncio.wait_for(manager.wait_started(), 10)
    manager.stop()
    await asyncio.wait_for(serving, 20)
    # its route's provider is closed: a clear, fatal error, not a provider that starts
    # and then fails every fetch (the manager says so before the provider could)
    with pytest.raises(ConfigurationError, match=r"already ran .* build new routes"):
        await asyncio.wait_for(manager.serve(), 5)
    # and the provider itself, started again by hand, refuses too
    with pytest.raises(ConfigurationError, match="closed; create a new one"):
        await asyncio.wait_for(route.provider.start(1), 5)


async def test_unreachable_endpoint_is_provider_error() -> None:
    from aiobotocore.config import AioConfig

    from loafer_core.errors import ProviderError

    provider = SQSProvider(
        "q",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
        config=AioConfig(connect_timeout=1, retries={"max_attempts": 0}),
    )
    with pytest.raises(ProviderError):
        await provider.start(1)
    await provider.close()


async def test_visibility_never_past_twelve_hours(
    sqs: Any,
    make_queue: MakeQueue,
    client_options: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = await make_queue()
    await send_bodies(sqs, url, ['"a"', '"b"'])
    timeouts: list[int] = []

    def record(params: dict[str, Any], **kwargs: Any) -> None:
        timeouts.extend(e["VisibilityTimeout"] for e in params["Entries"])

    from aiobotocore.session import get_session

    session = get_session()
    session.register("provide-client-params.sqs.ChangeMessageVisibilityBatch", record)
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, session=session, **client_options)
    await provider.start(2)
    try:
        first, second = await fetch_n(provider, 2)
        # pretend the first was received 11h59m ago: only a minute is left before the cap
        first.token.received_at -= 43_200 - 120
        await provider.extend_leases([first], 3600)
        assert len(timeouts) == 1 and 0 < timeouts[0] <= 60
        first.token.received_at -= 120
        with caplog.at_level(logging.WARNING, logger="loafer_sqs"):
            await provider.extend_leases([first], 3600)  # past the cap: not extended
        assert len(timeouts) == 1
        assert "12-hour" in caplog.text
        await provider.settle(second, RETRY(10**6))  # clamped below 12 h
        await provider.flush()
        assert 43_000 < timeouts[1] < 43_200
        await provider.settle(first, ACCEPT)
    finally:
        await provider.close()


def test_registered_as_plugin() -> None:
    from loafer_core.plugins import load_provider

    assert load_provider("sqs") is SQSProvider


async def test_health(make_queue: MakeQueue, client_options: dict[str, Any]) -> None:
    from loafer_core.provider import HealthChecker

    url = await make_queue()
    provider = SQSProvider(url, **client_options)
    assert isinstance(provider, HealthChecker)
    assert await provider.health() is False  # not started
    await provider.start(1)
    assert await provider.health() is True
    await provider.close()
    assert await provider.health() is False


async def test_missing_credentials_is_configuration_error(
    sqs_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    provider = SQSProvider("q", endpoint_url=sqs_endpoint, region_name="us-east-1")
    with pytest.raises(ConfigurationError, match="NoCredentialsError"):
        await provider.start(1)
    await provider.close()


async def test_lease_extensions_are_batched(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue(visibility=30)
    await send_bodies(sqs, url, [json.dumps(i) for i in range(25)])
    counter = CallCounter()
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, session=counter.session(), **client_options)
    await provider.start(25)
    try:
        deliveries = await fetch_n(provider, 25)
        await provider.extend_leases(deliveries, 60)
        assert counter.count("ChangeMessageVisibilityBatch") == 3
        assert counter.largest_batch() <= 10
        for delivery in deliveries:
            await provider.settle(delivery, ACCEPT)
    finally:
        await provider.close()


@pytest.mark.parametrize("outcome", [RELEASE, RETRY(0)], ids=["release", "retry-0"])
async def test_a_retried_lease_extension_does_not_hide_a_settled_message_again(
    outcome: Any, make_queue: MakeQueue, client_options: dict[str, Any], sqs: Any
) -> None:
    from aiobotocore.session import get_session

    url = await make_queue(visibility=30)
    await send_bodies(sqs, url, ["a"])
    session = get_session()
    failed = asyncio.Event()

    def fail_first_visibility_call(request: Any, **_: Any) -> None:
        target = request.headers.get("X-Amz-Target", b"")
        target = target.decode() if isinstance(target, bytes) else str(target)
        if target.endswith("ChangeMessageVisibilityBatch") and not failed.is_set():
            failed.set()
            raise ConnectionResetError("injected transient failure")

    session.register("before-send.sqs", fail_first_visibility_call)
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, session=session, **client_options)
    await provider.start(1)
    try:
        async with asyncio.timeout(20):
            deliveries: list[Delivery] = []
            while not deliveries:
                deliveries = list(await provider.fetch(1))
            [delivery] = deliveries
            # the lease loop extends; its batch call fails and will be retried...
            extension = asyncio.create_task(provider.extend_leases([delivery], 30))
            await failed.wait()
            # ... while the handler finishes: visible again at once
            await provider.settle(delivery, outcome)
            await provider.flush()
            await asyncio.gather(extension, return_exceptions=True)
            got = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2, MaxNumberOfMessages=1)
            assert got.get("Messages"), "the retried extension hid the settled message again"
    finally:
        await provider.close()
