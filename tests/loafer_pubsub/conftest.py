"""Fixtures for the Pub/Sub provider tests: the emulator (``pubsub_emulator``, from
tests/_brokers.py), a project of our own per session, and an admin client for set-up
(unique topic and subscription names, deleted after each test)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp
import pytest

#: The project every test uses: the emulator takes any name; ours keeps others' apart.
PROJECT = "loafer-test"


def unique(prefix: str = "loafer-test") -> str:
    """A topic or subscription name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class PubSubAdmin:
    """Test-side REST client of the emulator: creates, fills, reads and deletes topics and
    subscriptions (by short name, in :data:`PROJECT`)."""

    def __init__(self, host: str, project: str = PROJECT) -> None:
        self.root = f"http://{host}/v1/projects/{project}"
        self.project = project
        self.created: list[str] = []
        self.session: aiohttp.ClientSession | None = None

    async def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        data = io.BytesIO(json.dumps(body).encode()) if body is not None else None
        async with self.session.request(
            method,
            f"{self.root}/{path}",
            data=data,
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise AssertionError(f"{method} {path}: {response.status} {text}")
            return json.loads(text) if text.strip() else {}

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    async def topic(self, name: str | None = None) -> str:
        name = name or unique()
        await self.call("PUT", f"topics/{name}", {})
        self.created.append(f"topics/{name}")
        return name

    async def subscription(
        self,
        topic: str,
        name: str | None = None,
        *,
        ack_deadline: int = 10,
        dead_letter_topic: str | None = None,
        max_delivery_attempts: int = 5,
        ordering: bool = False,
    ) -> str:
        name = name or unique()
        body: dict[str, Any] = {"topic": self.topic_path(topic), "ackDeadlineSeconds": ack_deadline}
        if dead_letter_topic:
            body["deadLetterPolicy"] = {
                "deadLetterTopic": self.topic_path(dead_letter_topic),
                "maxDeliveryAttempts": max_delivery_attempts,
            }
        if ordering:
            body["enableMessageOrdering"] = True
        await self.call("PUT", f"subscriptions/{name}", body)
        self.created.append(f"subscriptions/{name}")
        return name

    async def queue(
        self, name: str | None = None, *, dead_letters: bool = True, **options: Any
    ) -> str:
        """Topic ``name``, its subscription ``name``; with ``dead_letters``, topic
        ``name-dead`` and its keeping subscription ``name-dead``, and the policy."""
        name = name or unique()
        await self.topic(name)
        dead = None
        if dead_letters:
            dead = await self.topic(f"{name}-dead")
            await self.subscription(dead, dead)
        await self.subscription(name, name, dead_letter_topic=dead, **options)
        return name

    async def put(
        self,
        topic: str,
        body: bytes,
        attributes: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> str:
        message: dict[str, Any] = {"data": base64.b64encode(body).decode()}
        if attributes:
            message["attributes"] = dict(attributes)
        if key:
            message["orderingKey"] = key
        answer = await self.call("POST", f"topics/{topic}:publish", {"messages": [message]})
        return str(answer["messageIds"][0])

    async def put_many(self, topic: str, bodies: Sequence[bytes], window: int = 500) -> None:
        for start in range(0, len(bodies), window):
            messages = [
                {"data": base64.b64encode(b).decode()} for b in bodies[start : start + window]
            ]
            await self.call("POST", f"topics/{topic}:publish", {"messages": messages})

    async def pull(self, subscription: str, *, ack: bool = True) -> list[dict[str, Any]]:
        """What the subscription has now (received messages as the API gives them),
        acknowledged unless ``ack=False``."""
        out: list[dict[str, Any]] = []
        while True:
            answer = await self.call(
                "POST",
                f"subscriptions/{subscription}:pull",
                {"maxMessages": 1000, "returnImmediately": True},
            )
            got = answer.get("receivedMessages") or []
            if not got:
                return out
            out.extend(got)
            ids = [m["ackId"] for m in got]
            if ack:
                await self.call(
                    "POST", f"subscriptions/{subscription}:acknowledge", {"ackIds": ids}
                )
            else:
                await self.call(
                    "POST",
                    f"subscriptions/{subscription}:modifyAckDeadline",
                    {"ackIds": ids, "ackDeadlineSeconds": 0},
                )
                return out

    async def bodies(self, subscription: str) -> list[bytes]:
        """The bodies the subscription has now, acknowledged."""
        return [data(m) for m in await self.pull(subscription)]

    async def cleanup(self) -> None:
        for path in reversed(self.created):
            with contextlib.suppress(AssertionError):
                await self.call("DELETE", path)
        self.created.clear()
        if self.session is not None:
            await self.session.close()
            self.session = None


def data(received: Mapping[str, Any]) -> bytes:
    """A received message's body."""
    return base64.b64decode(received["message"].get("data") or "")


def attributes(received: Mapping[str, Any]) -> dict[str, str]:
    """A received message's attributes."""
    return dict(received["message"].get("attributes") or {})


@pytest.fixture
async def admin(pubsub_emulator: str) -> AsyncIterator[PubSubAdmin]:
    """An admin client; every topic and subscription it creates is deleted after the test."""
    helper = PubSubAdmin(pubsub_emulator)
    try:
        yield helper
    finally:
        await helper.cleanup()
