"""The dead-letter stream of a NATS route (the stream capturing ``dead_letter_subject``).

REJECT publishes a copy there (awaiting its ack) with the common ``loafer-dead-*``
headers (the origin: the subject it came from), then ``term``. A replay publishes each
dead letter to that subject, awaits the stream's ack, then deletes it from the
dead-letter stream (``STREAM.MSG.DELETE``): at least once, with ``Nats-Msg-Id``
``loafer-replay:<dead stream>:<seq>``, so that a replay killed between the ack and the
delete and run again within the origin stream's duplicate window (2 minutes by default)
is dropped by JetStream itself; past the window, ``loafer-replay-id`` is the key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import Any

import nats.aio.client
import nats.errors
import nats.js.errors

from loafer_core.deadletters import DeadLetter, DeadLetters, read_dead_letter, replay_headers
from loafer_core.errors import ProviderError
from loafer_nats._connection import close_connection, open_connection
from loafer_nats.errors import mask_url

__all__ = ["NATSDeadLetters"]

#: Headers of a dead letter not copied back by a replay (the provider's older headers,
#: JetStream's own).
_NOT_COPIED = frozenset(
    {"x-loafer-reject-reason", "x-loafer-rejected-from", "Nats-Msg-Id", "Nats-Expected-Stream"}
)


class NATSDeadLetters(DeadLetters):
    """The messages in the stream that captures a route's dead-letter subject."""

    guarantee = "at-least-once"
    limits = "deduplicated by JetStream within the origin stream's duplicate window"

    def __init__(
        self,
        url: str,
        subject: str,
        options: Mapping[str, Any],
        secrets: Iterable[str],
        *,
        timeout: float,
    ) -> None:
        self._url = url
        self._subject = subject
        self._options = dict(options)
        self._secrets = tuple(secrets)
        self._timeout = timeout
        self._client: nats.aio.client.Client | None = None
        self._stream: str | None = None

    @property
    def where(self) -> str:
        """``nats://host subject`` (password masked)."""
        return f"{mask_url(self._url)} {self._stream or self._subject}"

    async def _js(self) -> Any:
        if self._client is None:
            self._client = await open_connection(
                self._url,
                name="loafer-dlq",
                connect_timeout=self._timeout,
                reconnect_wait=1.0,
                secrets=self._secrets,
                options=self._options,
            )
        js = self._client.jetstream(timeout=self._timeout)
        if self._stream is None:
            self._stream = await self._call(
                "finding the stream of", js.find_stream_name_by_subject(self._subject)
            )
        return js

    async def _call(self, what: str, step: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await step
        except nats.js.errors.NotFoundError:
            raise  # a message gone: the caller's to judge
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise ProviderError(
                f"NATS at {mask_url(self._url)}: {what} {self._subject!r}: {type(exc).__name__}"
            ) from None

    async def count(self) -> int:
        """Messages in the dead-letter stream."""
        js = await self._js()
        info = await self._call("reading", js.stream_info(self._stream))
        return int(info.state.messages)

    async def _scan(self) -> AsyncGenerator[DeadLetter, None]:
        js = await self._js()
        info = await self._call("reading", js.stream_info(self._stream))
        state = info.state
        if not state.messages:
            return
        for seq in range(state.first_seq, state.last_seq + 1):
            try:
                msg = await self._call("reading", js.get_msg(self._stream, seq))
            except nats.js.errors.NotFoundError:
                continue  # deleted (replayed or purged)
            if msg is None:
                continue
            yield read_dead_letter(str(seq), msg.data or b"", dict(msg.headers or {}))

    async def _move(self, letter: DeadLetter) -> None:
        js = await self._js()
        headers = {k: str(v) for k, v in replay_headers(letter).items() if k not in _NOT_COPIED}
        headers["Nats-Msg-Id"] = f"loafer-replay:{self._stream}:{letter.id}"
        subject = letter.origin
        if not subject:
            raise ProviderError(f"dead letter {letter.id} of {self.where}: no origin to replay to")
        await self._call(
            f"replaying {letter.id} to {subject!r} from",
            js.publish(subject, letter.body, headers=headers, timeout=self._timeout),
        )
        await self._remove(letter)

    async def _remove(self, letter: DeadLetter) -> None:
        js = await self._js()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._call("deleting from", js.delete_msg(self._stream, int(letter.id)))

    async def close(self) -> None:
        """Close the connection."""
        client, self._client = self._client, None
        if client is not None:
            await close_connection(client, self._timeout)
