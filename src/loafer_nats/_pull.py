"""The pull side of a JetStream consumer: our own pull requests into our own buffer.

nats-py's ``PullSubscription.fetch`` keeps the messages it has received in a local list
until it returns: a fetch cancelled at shutdown would drop them unacknowledged (held
until ``ack_wait`` ends). Here every delivered message goes straight into
:attr:`Puller.buffer` from the subscription's callback, so a cancelled wait loses
nothing. One pull request is live at a time (its batch is the free capacity asked for),
so the consumer never holds more than the route can take.

Each request has a reply subject of its own (``<inbox>.<n>``): the server's status
messages (408 request expired, 404 no messages, 409 consumer deleted or a limit
exceeded) tell which request ended. :meth:`Puller.stop` drains the subscription (an
UNSUB, then a round trip: what the server sent before it arrives and is handed to
``intake``), then asks for the consumer's info: NATS 2.9.10 drops a waiting request
whose reply subject nobody listens to only when it goes through its waiting list (a
consumer info request does), not when it delivers: without that sweep, a message given
back (nak) or published next is sent to the dead inbox and held until ``ack_wait`` ends
(seen in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["Puller"]

logger = logging.getLogger("loafer_nats.pull")

#: Seconds a request is still counted live after its ``expires`` (the 408 may be late).
EXPIRY_MARGIN = 0.5


class _Request:
    __slots__ = ("deadline", "remaining", "reply")

    def __init__(self, reply: str, remaining: int, deadline: float) -> None:
        self.reply = reply
        self.remaining = remaining
        self.deadline = deadline


class Puller:
    """Pull requests for one durable consumer, and the messages they brought.

    ``intake(msg)`` is called for each delivered message; it returns True to keep it in
    :attr:`buffer`, False when it took care of the message itself (a drain or close in
    progress: it naks it).
    """

    def __init__(
        self,
        client: Client,
        *,
        api_prefix: str,
        stream: str,
        consumer: str,
        intake: Callable[[Msg], bool],
        sweep: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._client = client
        self._next = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._what = f"consumer {consumer!r} of stream {stream!r}"
        self._intake = intake
        self._sweep = sweep
        self.buffer: deque[Msg] = deque()
        #: Set when a message arrives or a request ends.
        self.ready = asyncio.Event()
        self._request: _Request | None = None
        self._numbers = itertools.count()
        self._inbox = ""
        self._sub: Subscription | None = None
        #: A status that means the consumer cannot be pulled from (deleted, gone).
        self.error: str | None = None

    @property
    def subscribed(self) -> bool:
        return self._sub is not None

    async def subscribe(self) -> None:
        """Listen on a fresh inbox (``<inbox>.*``)."""
        if self._sub is not None:
            return
        self._inbox = self._client.new_inbox()
        self._request = None
        self._sub = await self._client.subscribe(f"{self._inbox}.*", cb=self._on_msg)

    def forget_request(self) -> None:
        """Count no request live (after a reconnection: the server may have lost it)."""
        self._request = None
        self.ready.set()

    def live(self, now: float) -> bool:
        request = self._request
        return request is not None and request.remaining > 0 and now < request.deadline

    def deadline(self) -> float | None:
        request = self._request
        return None if request is None else request.deadline

    async def pull(self, batch: int, expires: float) -> None:
        """Ask for up to ``batch`` messages, the request lasting ``expires`` seconds."""
        if self._sub is None:
            await self.subscribe()
        loop = asyncio.get_running_loop()
        reply = f"{self._inbox}.{next(self._numbers)}"
        self._request = _Request(reply, batch, loop.time() + expires + EXPIRY_MARGIN)
        body = json.dumps({"batch": batch, "expires": int(expires * 1_000_000_000)})
        await self._client.publish(self._next, body.encode(), reply=reply)

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        if not msg.reply and headers is not None and "Status" in headers:
            self._on_status(msg.subject, headers)
            return
        request = self._request
        if request is not None:
            request.remaining -= 1
            if request.remaining <= 0:
                self._request = None
        if self._intake(msg):
            self.buffer.append(msg)
            self.ready.set()

    def _on_status(self, subject: str, headers: dict[str, str]) -> None:
        status = headers.get("Status", "")
        if status == "100":  # idle heartbeat
            return
        description = headers.get("Description", "")
        request = self._request
        if request is not None and request.reply == subject:
            self._request = None
        if status == "409" and "deleted" in description.lower():
            self.error = f"the {self._what} was deleted ({status} {description})"
        elif status == "503":
            self.error = f"the {self._what} does not answer (no responders: deleted?)"
        elif status not in ("404", "408"):
            logger.warning("%s: pull request ended: %s %s", self._what, status, description)
        self.ready.set()

    async def stop(self) -> None:
        """Stop listening: drain the subscription (what the server already sent is given
        to ``intake``), so the server drops our waiting request. Cancellable."""
        sub, self._sub = self._sub, None
        self._request = None
        if sub is None:
            return
        client = self._client
        drained = False
        if client.is_connected and not client.is_draining:
            try:
                await sub.drain()  # type: ignore[no-untyped-call]
                drained = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("%s: draining the pull subscription: %r", self._what, exc)
        if not drained:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._sweep is not None and client.is_connected:
            try:
                await self._sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("%s: consumer info after the drain: %r", self._what, exc)

    def take(self, n: int) -> list[Msg]:
        """Up to ``n`` buffered messages, oldest first."""
        buffer = self.buffer
        if len(buffer) <= n:
            out = list(buffer)
            buffer.clear()
        else:
            out = [buffer.popleft() for _ in range(n)]
        if not buffer:
            self.ready.clear()
        return out

    def describe_request(self) -> dict[str, Any]:
        """For tests and debugging: the live request, if any."""
        request = self._request
        if request is None:
            return {}
        return {"reply": request.reply, "remaining": request.remaining}
