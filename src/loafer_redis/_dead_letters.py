"""The dead-letter stream of a Redis route: what REJECT writes, and its store.

REJECT copies the entry to ``<stream>:dead`` (one script, with the XACK) with the
common keys of :mod:`loafer_core.deadletters` as fields, next to the older
``x-loafer-reject-reason`` / ``x-loafer-rejected-from`` / ``x-loafer-rejected-id``.
A replay adds the entry back to its stream and deletes it from the dead-letter stream in
one script (``REPLAY``): each dead letter is moved exactly once, even if the replay is
killed. A dead-letter stream shared by several streams is read per origin: a route's
store sees only the entries that came from its stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import redis.asyncio

from loafer_core.deadletters import (
    DEAD_KEYS,
    DeadLetter,
    DeadLetters,
    dead_headers,
    read_dead_letter,
    replay_headers,
)
from loafer_core.provider import Delivery
from loafer_redis._scripts import REPLAY
from loafer_redis.errors import mask_url, operation_error

__all__ = ["RedisDeadLetters", "reject_fields"]

#: The fields earlier versions' REJECT wrote (the provider's ``REJECT_REASON_FIELD``,
#: ``REJECTED_FROM_FIELD``, ``REJECTED_ID_FIELD``): not copied back by a replay.
_LEGACY = frozenset({"x-loafer-reject-reason", "x-loafer-rejected-from", "x-loafer-rejected-id"})
#: Entries read per XRANGE.
_PAGE = 200


def reject_fields(
    delivery: Delivery,
    origin: str,
    reason: str,
    legacy: tuple[str, str, str],
    group_field: str,
) -> list[Any]:
    """The REJECT script's arguments after ``maxlen``: the number of fields not copied,
    their names, then the fields to add (the common keys and the ``legacy`` reason,
    origin and entry-id fields)."""
    headers = delivery.metadata.get("headers") or {}
    dead = dead_headers(headers, reason=reason, attempts=delivery.attempt, origin=origin)
    drop = [*DEAD_KEYS, *legacy, group_field]
    pairs: list[Any] = []
    for name, value in dead.items():
        pairs += [name, value]
    pairs += [legacy[0], dead[DEAD_KEYS[0]], legacy[1], origin, legacy[2], delivery.message_id]
    return [len(drop), *drop, *pairs]


def _decode(value: bytes) -> str | bytes:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


class RedisDeadLetters(DeadLetters):
    """The entries a route's REJECTs put in its dead-letter stream."""

    guarantee = "exactly-once"

    def __init__(
        self, url: str, stream: str, dead_stream: str, body_field: str | None, timeout: float
    ) -> None:
        self._url = url
        self._stream = stream
        self._dead = dead_stream
        self._body = body_field
        self._timeout = timeout
        self._client: redis.asyncio.Redis | None = None
        self._replay: Any = None

    @property
    def where(self) -> str:
        """``redis://host/db stream:dead`` (password masked)."""
        return f"{mask_url(self._url)} {self._dead}"

    def _open(self) -> redis.asyncio.Redis:
        if self._client is None:
            self._client = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout
            )
            self._replay = self._client.register_script(REPLAY)
        return self._client

    async def _call(self, what: str, step: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await step
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise operation_error(f"{what} {self._dead}", exc, self._url) from None

    async def count(self) -> int:
        """Entries in the dead-letter stream that came from this route's stream."""
        return sum([1 async for _ in self._scan()])

    def _letter(self, entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter | None:
        headers: dict[str, Any] = {}
        body: Any = None
        for name, value in fields.items():
            key = name.decode("utf-8", "replace")
            if self._body is not None and key == self._body:
                body = value
            else:
                headers[key] = _decode(value)
        letter = read_dead_letter(entry_id.decode(), body, headers, origin=self._stream)
        if letter.origin != self._stream:
            return None  # a shared dead-letter stream: another stream's entry
        return letter

    async def _scan(self) -> AsyncGenerator[DeadLetter, None]:
        client = self._open()
        start = "-"
        while True:
            page: Sequence[tuple[bytes, dict[bytes, bytes]]] = await self._call(
                "reading", client.xrange(self._dead, start, "+", count=_PAGE)
            )
            for entry_id, fields in page:
                letter = self._letter(entry_id, fields)
                if letter is not None:
                    yield letter
            if len(page) < _PAGE:
                return
            start = "(" + page[-1][0].decode()

    async def _move(self, letter: DeadLetter) -> None:
        self._open()
        fields: list[Any] = []
        if self._body is not None and letter.body is not None:
            fields += [self._body, letter.body]
        for name, value in replay_headers(letter).items():
            if name not in _LEGACY:
                fields += [name, value]
        await self._call(
            "replaying from",
            self._replay(
                keys=[self._dead, letter.origin or self._stream], args=[letter.id, *fields]
            ),
        )

    async def _remove(self, letter: DeadLetter) -> None:
        await self._call("deleting from", self._open().xdel(self._dead, letter.id))

    async def close(self) -> None:
        """Close the client."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
