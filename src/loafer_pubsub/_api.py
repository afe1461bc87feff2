"""The Pub/Sub REST API (v1) over one aiohttp session, authorised by gcloud-aio-auth.

gcloud-aio-pubsub's client classes build a credentials ``Token`` in their constructor
(reading key files, even for the emulator) and their ``pull`` drops each message's
``orderingKey``; so the calls are made here, one small function each, with the same
auth library (``gcloud.aio.auth.Token``) and the emulator convention
(``PUBSUB_EMULATOR_HOST``: plain HTTP, no credentials).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from gcloud.aio.auth import Token

from loafer_pubsub.errors import ApiError
from loafer_pubsub.errors import secrets_of as url_secrets
from loafer_pubsub.settings import Endpoint

__all__ = ["SCOPES", "Api", "Received", "api_root", "encode_message", "secrets_of"]

SCOPES = ["https://www.googleapis.com/auth/pubsub"]
SERVICE_ROOT = "https://pubsub.googleapis.com/v1"
#: A request body aiohttp would rather read from a file object, bytes.
LARGE = 512 * 1024


def api_root(endpoint: Endpoint) -> tuple[str, bool]:
    """The API's root URL and whether it takes no credentials: an emulator, or any plain
    ``http://`` root (a bearer token is never sent without TLS)."""
    if endpoint.api_root:
        root = endpoint.api_root.rstrip("/")
        return root, root.startswith("http://")
    host = endpoint.emulator_host or os.environ.get("PUBSUB_EMULATOR_HOST")
    if host:
        return f"http://{host}/v1", True
    return SERVICE_ROOT, False


def secrets_of(endpoint: Endpoint) -> tuple[str, ...]:
    """What must never be shown: the API root's query secrets, the service file's path
    and its private key (its lines too), longest first."""
    found = list(url_secrets(endpoint.api_root)) if endpoint.api_root else []
    service_file = endpoint.service_file
    if service_file:
        found.append(service_file)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            with open(service_file, encoding="utf-8") as file:
                data = json.load(file)
            for name in ("private_key", "private_key_id", "client_secret", "refresh_token"):
                value = data.get(name)
                if isinstance(value, str) and value:
                    found.append(value)
                    found.extend(line for line in value.splitlines() if len(line) >= 16)
    return tuple(sorted(set(found), key=len, reverse=True))


def encode_message(
    data: bytes, attributes: Mapping[str, str] | None, ordering_key: str | None
) -> dict[str, Any]:
    """One ``PubsubMessage`` as the REST API takes it."""
    message: dict[str, Any] = {"data": base64.b64encode(data).decode("ascii")}
    if attributes:
        message["attributes"] = dict(attributes)
    if ordering_key:
        message["orderingKey"] = ordering_key
    return message


class Received:
    """One received message: its ack id and the message's fields."""

    __slots__ = (
        "ack_id",
        "attempt",
        "attributes",
        "data",
        "message_id",
        "ordering_key",
        "published",
    )

    def __init__(self, item: Mapping[str, Any]) -> None:
        message = item.get("message") or {}
        self.ack_id: str = item["ackId"]
        attempt = item.get("deliveryAttempt")
        self.attempt: int | None = attempt if isinstance(attempt, int) and attempt > 0 else None
        self.message_id: str = str(message.get("messageId", ""))
        raw = message.get("data")
        self.data: bytes = binascii.a2b_base64(raw) if raw else b""
        # the answer's own dict (parsed for this message alone): no copy
        self.attributes: dict[str, str] = message.get("attributes") or {}
        self.ordering_key: str | None = message.get("orderingKey") or None
        self.published: str | None = message.get("publishTime")


class Api:
    """The calls the plugin makes. Errors: :class:`~loafer_pubsub.errors.ApiError` for an
    error status, aiohttp's and ``TimeoutError`` otherwise (translated by the caller)."""

    def __init__(self, endpoint: Endpoint, project: str) -> None:
        self.root, self.emulator = api_root(endpoint)
        self.project = project
        self._service_file = endpoint.service_file
        self._session: aiohttp.ClientSession | None = None
        self._token: Token | None = None

    def path(self, kind: str, name: str) -> str:
        """``projects/<project>/<kind>/<name>``."""
        return f"projects/{self.project}/{kind}/{name}"

    def _open(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=64)
            session = aiohttp.ClientSession(connector=connector)
            self._session = session
            if not self.emulator and self._token is None:
                self._token = Token(
                    service_file=self._service_file,
                    session=session,  # type: ignore[arg-type]  # aiohttp build typed as requests
                    scopes=SCOPES,
                )
        return session

    async def call(
        self, method: str, path: str, body: Mapping[str, Any] | None, timeout: float
    ) -> dict[str, Any]:
        """One request; its JSON answer (``{}`` when empty). ``timeout`` bounds it all,
        the credentials' token request included (gcloud-aio-auth retries it)."""
        async with asyncio.timeout(timeout):
            return await self._call(method, path, body)

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
        session = self._open()
        headers = {"Content-Type": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {await self._token.get()}"
        data: Any = json.dumps(body).encode() if body is not None else None
        if data is not None and len(data) > LARGE:
            data = io.BytesIO(data)  # aiohttp warns of a large bytes body
        async with session.request(
            method, f"{self.root}/{path}", data=data, headers=headers
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise ApiError(response.status, response.reason or "", _message(text))
            return json.loads(text) if text.strip() else {}

    # -- admin ----------------------------------------------------------------------------

    async def get(self, path: str, timeout: float) -> dict[str, Any]:
        """A topic or subscription (``projects/p/topics/t``)."""
        return await self.call("GET", path, None, timeout)

    async def put(self, path: str, body: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """Create a topic or subscription."""
        return await self.call("PUT", path, body, timeout)

    async def delete(self, path: str, timeout: float) -> None:
        """Delete a topic or subscription."""
        await self.call("DELETE", path, None, timeout)

    # -- messages -------------------------------------------------------------------------

    async def pull(self, subscription: str, max_messages: int, timeout: float) -> list[Received]:
        """One pull that answers at once (``returnImmediately``): a pull abandoned while
        the server waits would keep what it is given leased to nobody."""
        answer = await self.call(
            "POST",
            f"{subscription}:pull",
            {"maxMessages": max_messages, "returnImmediately": True},
            timeout,
        )
        return [Received(item) for item in answer.get("receivedMessages") or ()]

    async def acknowledge(self, subscription: str, ack_ids: Sequence[str], timeout: float) -> None:
        await self.call(
            "POST",
            f"{subscription}:acknowledge",
            {"ackIds": list(ack_ids)},
            timeout,
        )

    async def modify_ack_deadline(
        self, subscription: str, ack_ids: Sequence[str], seconds: int, timeout: float
    ) -> None:
        await self.call(
            "POST",
            f"{subscription}:modifyAckDeadline",
            {"ackIds": list(ack_ids), "ackDeadlineSeconds": seconds},
            timeout,
        )

    async def publish(
        self, topic: str, messages: Sequence[Mapping[str, Any]], timeout: float
    ) -> list[str]:
        """Publish; the message ids the service returned (its confirms)."""
        answer = await self.call("POST", f"{topic}:publish", {"messages": list(messages)}, timeout)
        ids = answer.get("messageIds") or []
        if len(ids) != len(messages):
            raise ApiError(502, "Bad Gateway", f"{len(ids)} message ids for {len(messages)}")
        return [str(i) for i in ids]

    async def close(self) -> None:
        session, self._session = self._session, None
        token, self._token = self._token, None
        if token is not None:
            await token.close()
        if session is not None:
            await session.close()


def _message(text: str) -> str:
    try:
        error = json.loads(text).get("error") or {}
        return str(error.get("message") or error.get("status") or text)
    except (ValueError, AttributeError):
        return text[:300]
