"""loafer-core's publisher conformance kit, run against PubSubPublisher on the emulator
(each destination a topic with a subscription of the same name, read by pulling)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from loafer_core.testing import Arrived, PublisherContract
from loafer_pubsub import PubSubPublisher
from tests.loafer_pubsub.conftest import PROJECT, PubSubAdmin, attributes, data

pytestmark = pytest.mark.pubsub

#: A private key as a service account file holds one (not a real key).
FAKE_KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7fakekeyLOAFER\n"
    "-----END PRIVATE KEY-----\n"
)


class TestPubSubPublisherContract(PublisherContract):
    destination_prefix: ClassVar[str] = "loafer-pub-contract-pubsub"

    @pytest.fixture(autouse=True)
    def _server(self, pubsub_emulator: str, tmp_path: Path) -> None:
        self.host = pubsub_emulator
        self.tmp_path = tmp_path

    @contextlib.asynccontextmanager
    async def _admin(self) -> AsyncIterator[PubSubAdmin]:
        admin = PubSubAdmin(self.host)
        try:
            yield admin
        finally:
            admin.created.clear()
            await admin.cleanup()

    async def make_publisher(self, destination: str) -> Any:
        return PubSubPublisher(destination, project=PROJECT, emulator_host=self.host)

    async def create_destination(self, destination: str) -> None:
        async with self._admin() as admin:
            await admin.topic(destination)
            await admin.subscription(destination, destination)

    async def delete_destination(self, destination: str) -> None:
        async with self._admin() as admin:
            for path in (f"subscriptions/{destination}", f"topics/{destination}"):
                with contextlib.suppress(AssertionError):
                    await admin.call("DELETE", path)

    async def take(self, destination: str) -> Sequence[Arrived]:
        async with self._admin() as admin:
            got = await admin.pull(destination)
        return [Arrived(data(m), attributes(m)) for m in got]

    async def make_refusing_publisher(self, destination: str) -> Any:
        # a topic that does not exist: the service answers the publish with NOT_FOUND
        return PubSubPublisher(f"{destination}-missing", project=PROJECT, emulator_host=self.host)

    async def make_publisher_with_secret(self, destination: str) -> tuple[Any, str]:
        # the real service with a service account file: its key never shows; the token
        # request to a closed local port fails
        secret = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7fakekeyLOAFER"
        key_file = self.tmp_path / "sa.json"
        key_file.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": PROJECT,
                    "private_key_id": "0123456789abcdef",
                    "private_key": FAKE_KEY,
                    "client_email": "loafer@loafer-test.iam.gserviceaccount.com",
                    "token_uri": "http://127.0.0.1:9/token",
                }
            )
        )
        publisher = PubSubPublisher(
            destination,
            project=PROJECT,
            api_root="https://127.0.0.1:9/v1",
            service_file=str(key_file),
            timeout=3,
        )
        return publisher, secret
