"""SQS's batch calls on the kit's :class:`~loafer_core.kit.Batcher`: at most 10 entries a
call, the per-entry failures of a response (:func:`failures_in`), and which of their
codes retrying cannot fix.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from loafer_core.kit import Batcher as _KitBatcher
from loafer_core.kit import Batching, Failure, SendBatch
from loafer_sqs.errors import mask

__all__ = [
    "MAX_BATCH",
    "PERMANENT_CODES",
    "REFUSED_CODES",
    "Batcher",
    "Failure",
    "failures_in",
    "refusal",
]

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


#: Error codes (of an entry, or of a whole call) by which SQS or SNS refuses what was
#: sent, not a failure of the service: not retried; a publish gets ``PublishRefused``.
REFUSED_CODES = PERMANENT_CODES | {"InvalidParameter", "ParameterValueInvalid"}


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
        retry = code not in REFUSED_CODES and not (
            entry.get("SenderFault") and code.endswith("Invalid")
        )
        failed[index] = Failure(f"{code}: {entry.get('Message', '')}", retry, refused=not retry)
    return failed


def refusal(exc: Exception) -> Failure | None:
    """A batch call's exception as a refusal of its entries (a client error SQS or SNS
    answered with one of :data:`REFUSED_CODES`), else ``None`` (retryable)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return None
    error = response.get("Error")
    code = str(error.get("Code", "")) if isinstance(error, Mapping) else ""
    if code.rpartition(".")[2] not in REFUSED_CODES:
        return None
    return Failure(f"{code}: {mask(exc)}", retry=False, refused=True)


class Batcher(_KitBatcher[E]):
    """The kit's batcher with SQS's limits: at most :data:`MAX_BATCH` entries a call,
    failures logged on ``loafer_sqs`` with credentials masked. ``linger``,
    ``max_batch`` (at most 10) and ``attempts`` are the
    :class:`~loafer_core.kit.Batching` fields SQS sets."""

    def __init__(
        self,
        name: str,
        send: SendBatch[E],
        *,
        linger: float = 0.02,
        max_batch: int = MAX_BATCH,
        attempts: int = 4,
        **options: Any,
    ) -> None:
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be between 1 and {MAX_BATCH}")
        super().__init__(
            name,
            send,
            batching=Batching(linger=linger, max_batch=max_batch, attempts=attempts),
            logger=logger,
            scrub=mask,
            **options,
        )
