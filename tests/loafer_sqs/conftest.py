"""Helpers for the SQS plugin's tests. The fixtures (the moto server started by the test
session, ``client_options``, ``aws_env``, ``sqs``, ``sns``, ``make_queue``) are in
tests/_brokers.py; ``REGION``, ``CREDENTIALS`` and ``MakeQueue`` are re-exported here.
"""

from __future__ import annotations

import json
from typing import Any

from loafer_core.testing import eventually
from tests._brokers import CREDENTIALS as CREDENTIALS
from tests._brokers import REGION as REGION
from tests._brokers import MakeQueue as MakeQueue


async def send_bodies(sqs: Any, url: str, bodies: list[str], **extra: Any) -> None:
    """Send ``bodies`` with SendMessageBatch, 10 at a time."""
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        entries = [{"Id": str(i), "MessageBody": b, **extra} for i, b in enumerate(chunk)]
        response = await sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not response.get("Failed"), response


async def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    attrs = (
        await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


class CallCounter:
    """Counts SQS API calls at the HTTP level (``before-send``) and batch entry sizes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, request: Any, **kwargs: Any) -> None:
        target = request.headers.get("X-Amz-Target", b"")
        if isinstance(target, bytes):
            target = target.decode()
        operation = str(target).rsplit(".", 1)[-1] or "?"
        entries = 0
        body = request.body
        if body:
            try:
                payload = json.loads(body)
            except (ValueError, TypeError):
                payload = {}
            if isinstance(payload, dict):
                entries = len(payload.get("Entries", []) or [])
        self.calls.append((operation, entries))

    def count(self, operation: str | None = None) -> int:
        return sum(1 for op, _ in self.calls if operation is None or op == operation)

    def largest_batch(self) -> int:
        return max((n for _, n in self.calls), default=0)

    def session(self) -> Any:
        """An aiobotocore session whose clients report to this counter."""
        from aiobotocore.session import get_session

        session = get_session()
        session.register("before-send.sqs", self)
        return session


async def wait_for_counts(sqs: Any, url: str, expected: tuple[int, int], timeout: float) -> None:
    """Poll the queue's counters until they read ``expected`` (moto cannot notify us)."""

    async def reached() -> bool:
        return await queue_counts(sqs, url) == expected

    await eventually(reached, timeout=timeout, interval=0.1, what=f"queue counts {expected}")
