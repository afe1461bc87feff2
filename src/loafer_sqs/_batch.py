"""SQS's batch calls on the kit's :class:`~loafer_core.kit.Batcher`: at most 10 entries a
call, the per-entry failures of a response (:func:`failures_in`), and which of their
codes retrying cannot fix.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from loafer_core.kit import Batcher as _KitBatcher
from loafer_core.kit import Failure, SendBatch
from loafer_sqs.errors import mask

__all__ = ["MAX_BATCH", "PERMANENT_CODES", "Batcher", "Failure", "failures_in"]

logger = logging.getLogger("loafer_sqs")

E = TypeVar("E")

MAX_BATCH = 10


#: Per-entry failure codes that retrying cannot fix.
PERMANENT_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "InvalidParameterValue",
        "MessageNotInflight",
        "InvalidIdFormat",
        "BatchEntryIdsNotDistinct",
        "InvalidMessageContents",
        "InvalidAttributeName",
        "InvalidAttributeValue",
        "MessageTooLong",
        "BatchRequestTooLong",
    }
)


def failures_in(response: Mapping[str, Any], count: int) -> dict[int, Failure]:
    """The failed entries of a batch call's ``response`` (``Failed``), by index; an
    entry whose code retrying cannot fix is not retried."""
    failed: dict[int, Failure] = {}
    for entry in response.get("Failed", ()) or ():
        try:
            index = int(entry["Id"])
        except (KeyError, ValueError):
            continue
        if not 0 <= index < count:
            continue
        code = str(entry.get("Code", "?"))
        retry = code not in PERMANENT_CODES and not (
            entry.get("SenderFault") and code.endswith("Invalid")
        )
        failed[index] = Failure(f"{code}: {entry.get('Message', '')}", retry)
    return failed


class Batcher(_KitBatcher[E]):
    """The kit's batcher with SQS's limits: at most :data:`MAX_BATCH` entries a call,
    failures logged on ``loafer_sqs`` with credentials masked."""

    def __init__(self, name: str, send: SendBatch[E], **options: Any) -> None:
        max_batch = options.pop("max_batch", MAX_BATCH)
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be between 1 and {MAX_BATCH}")
        super().__init__(name, send, max_batch=max_batch, logger=logger, scrub=mask, **options)
