"""The outcome model: how every delivery is settled, whatever the broker.

Modelled on AMQP 1.0's delivery states:

- ``ACCEPT``: processed; remove it from the broker.
- ``RETRY(delay=None)``: a failed attempt; deliver it again later (after ``delay``
  seconds where given). Counts toward a route's ``max_attempts``.
- ``REJECT(reason)``: poison; never redeliver; dead-letter where the broker can.
- ``RELEASE``: not processed and not a failure (e.g. fetched but not started at
  shutdown); deliver again promptly, without counting an attempt.

Each provider maps these onto its broker (see ``docs/outcomes.md``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["ACCEPT", "REJECT", "RELEASE", "RETRY", "Outcome", "OutcomeKind"]


class OutcomeKind(enum.Enum):
    """The four ways a delivery can be settled."""

    ACCEPT = "accept"
    RETRY = "retry"
    REJECT = "reject"
    RELEASE = "release"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a delivery is settled. Build them with the constants and functions below:

    ``Outcome.ACCEPT``, ``Outcome.RELEASE``, ``Outcome.RETRY(delay=None)``,
    ``Outcome.REJECT(reason)`` (also importable as module-level ``ACCEPT``, ``RELEASE``,
    ``RETRY`` and ``REJECT``).
    """

    kind: OutcomeKind
    delay: float | None = None
    reason: str | None = None

    ACCEPT: ClassVar[Outcome]
    RELEASE: ClassVar[Outcome]

    def __post_init__(self) -> None:
        if self.delay is not None:
            if self.kind is not OutcomeKind.RETRY:
                raise ValueError("only a RETRY outcome takes a delay")
            if (
                isinstance(self.delay, bool)
                or not isinstance(self.delay, int | float)
                or not math.isfinite(self.delay)
                or self.delay < 0
            ):
                raise ValueError(f"RETRY delay must be a finite number >= 0, got {self.delay!r}")
        if self.reason is not None and self.kind is not OutcomeKind.REJECT:
            raise ValueError("only a REJECT outcome takes a reason")

    @staticmethod
    def RETRY(delay: float | None = None) -> Outcome:
        """A failed attempt: deliver again later (after ``delay`` seconds where given)."""
        return Outcome(OutcomeKind.RETRY, delay=delay)

    @staticmethod
    def REJECT(reason: str = "rejected") -> Outcome:
        """Poison: never redeliver; dead-letter where the broker can."""
        return Outcome(OutcomeKind.REJECT, reason=str(reason))

    @property
    def is_accept(self) -> bool:
        """True for ACCEPT."""
        return self.kind is OutcomeKind.ACCEPT

    def __repr__(self) -> str:
        if self.kind is OutcomeKind.RETRY:
            return f"RETRY(delay={self.delay!r})"
        if self.kind is OutcomeKind.REJECT:
            return f"REJECT({self.reason!r})"
        return self.kind.name


Outcome.ACCEPT = Outcome(OutcomeKind.ACCEPT)
Outcome.RELEASE = Outcome(OutcomeKind.RELEASE)

ACCEPT = Outcome.ACCEPT
"""Processed: remove the message from the broker (``Outcome.ACCEPT``)."""
RELEASE = Outcome.RELEASE
"""Give the message back, no attempt counted where the broker can tell."""
RETRY = Outcome.RETRY
"""``RETRY(delay=None)``: deliver again, after ``delay`` seconds where possible."""
REJECT = Outcome.REJECT
"""``REJECT(reason)``: never deliver again; dead-letter it where the broker can."""
