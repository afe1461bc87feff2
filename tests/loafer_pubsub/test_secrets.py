"""No credential in any log record (DEBUG included), exception or repr: the service
account file's private key (and its path), an API key in the API root's query."""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from loafer_core.errors import ConfigurationError, LoaferError
from loafer_pubsub import Endpoint, PubSubProvider, PubSubPublisher, PubSubRoute, PubSubSettings
from loafer_pubsub.errors import mask_url, scrub

from .conftest import PROJECT

pytestmark = pytest.mark.pubsub

API_KEY = "AIzaSy-loafer-secret-api-key"


@pytest.fixture
def key_file(tmp_path: Path) -> tuple[Path, str]:
    """A service account file with a real (throw-away) RSA key, whose token endpoint is a
    closed local port; and the key's base64 body (the secret)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path / "secret-sa-file.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "0123456789abcdef0123",
                "private_key": pem,
                "client_email": "loafer@loafer-test.iam.gserviceaccount.com",
                "token_uri": "http://127.0.0.1:9/token",
            }
        )
    )
    return path, pem.splitlines()[1]


def test_mask_url_and_scrub() -> None:
    assert mask_url(f"https://pubsub.example/v1?key={API_KEY}") == (
        "https://pubsub.example/v1?key=******"
    )
    text = (
        f'failed https://h/v1?key={API_KEY} "private_key": "abc123def" '
        "Authorization: Bearer ya29.tok"
    )
    clean = scrub(text)
    assert API_KEY not in clean and "abc123def" not in clean and "ya29.tok" not in clean


def test_reprs_and_construction_errors_hide_the_credentials_file(
    key_file: tuple[Path, str],
) -> None:
    path, _ = key_file
    settings = PubSubSettings(
        subscription="sub", project=PROJECT, endpoint=Endpoint(service_file=str(path))
    )
    provider = PubSubProvider(settings)
    route = PubSubRoute("sub", project=PROJECT, service_file=str(path), handler=lambda c, m: True)
    publisher = PubSubPublisher("t-name", project=PROJECT, service_file=str(path))
    texts = [repr(settings), repr(provider), repr(route), repr(publisher)]
    texts += [repr(provider.description()), repr(publisher.description())]
    for text in texts:
        assert path.name not in text, text
    with pytest.raises(ConfigurationError) as caught:
        PubSubProvider("sub", project=PROJECT, service_file="")
    assert "service_file" in str(caught.value)


async def test_a_failed_start_and_publish_log_and_raise_no_credential(
    caplog: pytest.LogCaptureFixture, key_file: tuple[Path, str]
) -> None:
    caplog.set_level(logging.DEBUG)
    path, secret = key_file
    root = f"https://127.0.0.1:9/v1?key={API_KEY}"  # https: the credentials are used
    provider = PubSubProvider(
        "sub-name", project=PROJECT, api_root=root, service_file=str(path), connect_timeout=2
    )
    with pytest.raises(LoaferError) as caught:
        await provider.start(1)
    await provider.close()
    publisher = PubSubPublisher(
        "t-name", project=PROJECT, api_root=root, service_file=str(path), timeout=2
    )
    with pytest.raises(LoaferError) as caught2:
        await publisher.publish(b"{}")
    await publisher.close()
    texts = ["".join(traceback.format_exception(e)) for e in (caught.value, caught2.value)]
    texts += [r.getMessage() for r in caplog.records]
    texts += [r.exc_text or "" for r in caplog.records]
    assert caplog.records, "nothing was logged: the test would prove nothing"
    for text in texts:
        assert secret not in text, text
        assert API_KEY not in text, text
        assert str(path) not in text, text
