"""Small, composable policy pieces (frozen dataclasses).

- :class:`RetryPolicy`: the delay a plain ``RETRY`` (no delay of its own) gets, from the
  attempt number: ``initial * factor ** (attempt - 1)``, capped at ``maximum``.
- :class:`Backoff`: exponential backoff with jitter, used by the dispatcher for
  failed fetch and settle calls.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from loafer_core.errors import ConfigurationError

__all__ = ["DEFAULT_RETRY", "Backoff", "RetryPolicy", "check_number"]


def check_number(owner: str, name: str, value: Any, *, minimum: float) -> None:
    """Raise ``ConfigurationError`` naming ``owner(name=...)`` unless ``value`` is a finite
    number (not a bool) >= ``minimum``. For plugins' settings too."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < minimum
    ):
        raise ConfigurationError(
            f"{owner}({name}=...): expected a number >= {minimum}, got {value!r}"
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Delay for retries: ``RetryPolicy(initial=5)`` retries after 5 s, 10 s, 20 s, ...

    Needs a provider with delayed retry (checked at start-up); with ``factor != 1`` it
    uses the delivery's attempt number where the provider counts attempts (the first
    delay otherwise).
    """

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 300.0

    def __post_init__(self) -> None:
        check_number("RetryPolicy", "initial", self.initial, minimum=0)
        check_number("RetryPolicy", "factor", self.factor, minimum=1)
        check_number("RetryPolicy", "maximum", self.maximum, minimum=0)

    def delay(self, attempt: int | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        n = max(1, attempt or 1)
        try:
            value = self.initial * self.factor ** (n - 1)
        except OverflowError:
            value = self.maximum
        return float(min(value, self.maximum))


DEFAULT_RETRY = RetryPolicy(initial=1.0, factor=2.0, maximum=60.0)
"""What a route's plain RETRYs wait when no ``retry=`` is given: 1 s, 2 s, 4 s... up to a
minute (1 s each time where the provider does not count attempts). Not applied where the
provider cannot delay a retry, or where its plain RETRY already waits (SQS's visibility
timeout); see docs/outcomes.md."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter.

    After ``n`` failures: a random delay in ``[c/2, c]`` with ``c = min(cap, base * 2**n)``.
    """

    base: float = 0.1
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (>= 1)."""
        ceiling = min(self.cap, self.base * 2 ** min(failures, 30))
        return random.uniform(ceiling / 2, ceiling)
