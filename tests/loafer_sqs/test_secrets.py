"""No credential in any log record (botocore's DEBUG output included), repr or error."""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any

import pytest

from loafer_core.errors import LoaferError
from loafer_core.outcome import ACCEPT
from loafer_sqs import SNSPublisher, SQSProvider, SQSPublisher
from loafer_sqs.errors import mask
from tests.loafer_sqs.conftest import MakeQueue
from tests.loafer_sqs.test_provider import fetch_n

pytestmark = pytest.mark.sqs

SECRET_KEY = "sEcReTkEy-4c1d-Zq9Lm"
SESSION_TOKEN = "SeSsIoNtOkEn-77f2-Xw3Pa+/Q=="
PASSWORD = "pAsSwOrD-0a9b-Yk4"
SECRETS = (SECRET_KEY, SESSION_TOKEN, PASSWORD)


def _texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every record as a handler would write it (exception and stack included)."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return [formatter.format(record) for record in caplog.records]


def _error_texts(error: BaseException) -> list[str]:
    return [str(error), repr(error), "".join(traceback.format_exception(error))]


async def test_no_secret_in_logs_reprs_or_errors(
    make_queue: MakeQueue, client_options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: every library's DEBUG output
    url = await make_queue()
    options = {
        **client_options,
        "aws_secret_access_key": SECRET_KEY,
        "aws_session_token": SESSION_TOKEN,
    }
    seen: list[str] = []
    async with asyncio.timeout(30):
        publisher = SQSPublisher(url, **options)
        async with publisher:
            await publisher.publish({"n": 1})
        seen += [repr(publisher), str(publisher)]
        provider = SQSProvider(url, {"WaitTimeSeconds": 1}, **options)
        await provider.start(1)
        try:
            [delivery] = await fetch_n(provider, 1)
            await provider.settle(delivery, ACCEPT)
        finally:
            await provider.close()
        seen += [repr(provider), str(provider), provider.describe()]
        sns = SNSPublisher(**options)
        async with sns:
            with pytest.raises(LoaferError) as missing:
                await sns.publish("x", topic="no-such-topic")
        seen += [repr(sns), *_error_texts(missing.value)]

        # credentials in the endpoint URL: shown nowhere, errors included
        userinfo = {**options, "endpoint_url": f"http://user:{PASSWORD}@127.0.0.1:9"}
        for closing in (
            SQSProvider(f"http://user:{PASSWORD}@127.0.0.1:9/1/q", **userinfo),
            SQSPublisher("q", **userinfo),
            SNSPublisher("t", **userinfo),
        ):
            seen += [repr(closing), str(closing)]
            if isinstance(closing, SQSProvider):
                seen.append(closing.describe())
                starting = closing.start(1)
            else:
                starting = closing.publish("x")
            with pytest.raises(LoaferError) as failed:
                await starting
            seen += _error_texts(failed.value)
            await closing.close()
    records = _texts(caplog)
    assert any("x-amz-security-token" in r.lower() for r in records)  # botocore did log
    assert any("Signature" in r for r in records)
    for secret in SECRETS:
        leaks = [text for text in [*records, *seen] if secret in text]
        assert not leaks, f"{secret!r} shown in: {leaks[:3]}"


def test_mask_covers_what_the_libraries_print() -> None:
    """The shapes seen in botocore's DEBUG output and in its exceptions' messages."""
    samples = {
        "x-amz-security-token:TOK/en+==\nx-amz-target:A": "TOK/en+==",
        "{'X-Amz-Security-Token': b'TOK', 'Authorization': b'x'}": "TOK",
        "Credential=AKIA/x, SignedHeaders=host, Signature=0123456789abcdef0123": "0123456789abcdef",
        "Signature:\n0123456789abcdef0123456789abcdef": "0123456789abcdef",
        'Could not connect to the endpoint URL: "http://u:PASS@h:9/"': "PASS",
        "<SessionToken>TOK</SessionToken><SecretAccessKey>KEY</SecretAccessKey>": "TOK",
        '{"SecretAccessKey": "KEY"}': "KEY",
        "aws_secret_access_key='KEY'": "KEY",
        "https://b.s3.amazonaws.com/k?X-Amz-Security-Token=TOK&X-Amz-Signature=0123456789abcdef0": (
            "TOK"
        ),
        "'Authorization': b'Bearer TOKEN123'": "TOKEN123",
    }
    for text, secret in samples.items():
        assert secret not in mask(text), text
    # what is not a secret stays readable
    plain = "SignedHeaders=content-type;host;x-amz-security-token, Credential=AKIA/x"
    assert mask(plain) == plain


def test_a_library_error_showing_the_endpoints_credentials_is_masked_and_not_chained() -> None:
    from botocore.exceptions import EndpointConnectionError

    from loafer_sqs.errors import cause, translate_error

    library_error = EndpointConnectionError(endpoint_url=f"http://user:{PASSWORD}@host:9/")
    assert PASSWORD in str(library_error)  # what botocore says
    with pytest.raises(LoaferError) as raised:
        try:
            raise library_error
        except EndpointConnectionError as exc:
            raise translate_error(exc, "receiving") from cause(exc)
    for text in _error_texts(raised.value):
        assert PASSWORD not in text, text
    assert "http://******@host:9/" in str(raised.value)
