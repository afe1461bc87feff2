"""Attempt accounting and the retry policy of one route: what a RETRY becomes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from loafer_core._message_errors import MessageErrors, message_fields
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import REJECT, RETRY, Outcome
from loafer_core.policy import DEFAULT_RETRY, RetryPolicy
from loafer_core.provider import Capabilities, Delivery, Support

logger = logging.getLogger("loafer_core.route")


class Attempts:
    """A route's ``max_attempts`` and retry policy, applied to its deliveries.

    Before the handler: a delivery past ``max_attempts`` is REJECTED (:meth:`gate`). After
    it: a RETRY on the last attempt becomes a REJECT, a plain RETRY gets the policy's
    delay, and a delay the provider cannot honour is dropped or shortened, with a warning
    once per route and case (:meth:`finish`). The default policy applies only once
    :meth:`check` knows what the provider can do.
    """

    def __init__(
        self,
        route: str,
        provider: Callable[[], str],
        max_attempts: int | None,
        retry: RetryPolicy | None,
        default: bool,
        errors: MessageErrors,
    ) -> None:
        self.route = route
        self.provider = provider  # its description, for messages
        self.max_attempts = max_attempts
        self.retry = retry  # as given
        self.default = default  # no retry= given: DEFAULT_RETRY where it fits
        # what applies: the default only once check() knows the provider
        self.policy: RetryPolicy | None = None if default else retry
        self.capabilities: Capabilities | None = None
        self.errors = errors
        self._warned: set[str] = set()

    def check(self, capabilities: Capabilities) -> None:
        """Fail with ConfigurationError if the limits need what the provider cannot do
        (and remember what it can do with a RETRY's delay)."""
        self.capabilities = capabilities
        if self.max_attempts is not None and capabilities.attempt_count is Support.NONE:
            raise ConfigurationError(
                f"route {self.route!r}: max_attempts={self.max_attempts} needs a provider "
                f"that counts delivery attempts, and {self.provider()} does not; remove "
                "max_attempts or use the broker's own redrive/dead-letter limit"
            )
        if self.default:
            self.policy = default_retry_for(capabilities)
            if self.policy is None and not capabilities.retry_waits:
                logger.warning(
                    "route %r: %s cannot delay retries: a message that fails is redelivered "
                    "at once, again and again; set max_attempts, or dead-letter it from an "
                    "error handler",
                    self.route,
                    self.provider(),
                )
        elif self.retry is not None:
            if capabilities.delayed_retry is Support.NONE and self.retry.maximum > 0:
                raise ConfigurationError(
                    f"route {self.route!r}: retry={self.retry} needs delayed retries, and "
                    f"{self.provider()} has none; remove retry= or enable delayed retries on "
                    "the provider"
                )
            limit = capabilities.max_retry_delay
            if limit is not None and self.retry.maximum > limit:
                raise ConfigurationError(
                    f"route {self.route!r}: retry maximum {self.retry.maximum}s exceeds the "
                    f"provider's longest retry delay ({limit}s)"
                )

    def gate(self, delivery: Delivery) -> Outcome | None:
        """The REJECT of a delivery past ``max_attempts`` (logged), else None."""
        limit, attempt = self.max_attempts, delivery.attempt
        if limit is None or attempt is None or attempt <= limit:
            return None
        rejected = REJECT(f"max_attempts ({limit}) exceeded: attempt {attempt}")
        logger.warning(
            "route %r: message %s rejected before handling: attempt %d exceeds max_attempts=%d",
            self.route,
            delivery.message_id,
            attempt,
            limit,
            extra=message_fields(self.route, delivery, rejected),
        )
        return rejected

    def finish(self, outcome: Outcome, delivery: Delivery) -> Outcome:
        """Apply max_attempts and the retry policy to a RETRY."""
        limit = self.max_attempts
        if limit is not None and delivery.attempt is not None and delivery.attempt >= limit:
            rejected = REJECT(f"max_attempts ({limit}) reached")
            held = self.errors.throttle.admit(("last attempt",))  # the errors' bounded rate
            if held is not None:
                logger.warning(
                    "route %r: message %s failed its last attempt (%d of max_attempts=%d): "
                    "rejected%s",
                    self.route,
                    delivery.message_id,
                    delivery.attempt,
                    limit,
                    f" ({held} more not logged since the last time)" if held else "",
                    extra=message_fields(self.route, delivery, rejected),
                )
            return rejected
        if outcome.delay is None and self.policy is not None:
            return RETRY(self.policy.delay(delivery.attempt))
        if outcome.delay and self.capabilities is not None:
            return self.deliverable(outcome, outcome.delay, self.capabilities)
        return outcome

    def retry_outcome(self, delivery: Delivery, delay: float | None = None) -> Outcome:
        """The RETRY of a failed ``delivery`` (:meth:`finish`); with ``delay``, a delivery
        put off rather than failed: a RETRY after that many seconds as the provider can
        delay it, never a REJECT."""
        if delay is None:
            return self.finish(RETRY(), delivery)
        if self.capabilities is not None:
            return self.deliverable(RETRY(delay), delay, self.capabilities)
        return RETRY(delay)

    def deliverable(self, outcome: Outcome, delay: float, capabilities: Capabilities) -> Outcome:
        """A RETRY delay the provider cannot honour (none at all, or longer than it can):
        dropped or shortened to what it can, with a warning (once per route and case)."""
        if capabilities.delayed_retry is Support.NONE:
            self.warn_once(
                "no delay",
                "route %r: %s has no delayed retries: a RETRY(delay=%ss) from the handler "
                "is a plain RETRY (redelivered when the broker redelivers)",
                self.route,
                self.provider(),
                delay,
            )
            return RETRY()
        longest = capabilities.max_retry_delay
        if longest is not None and delay > longest:
            self.warn_once(
                "long delay",
                "route %r: %s delays a retry by at most its limit: RETRY(delay=%ss) is "
                f"shortened to {longest}s",
                self.route,
                self.provider(),
                delay,
            )
            return RETRY(longest)
        return outcome

    def warn_once(self, case: str, message: str, *args: Any) -> None:
        """Log a warning the first time ``case`` happens on this route only."""
        if case not in self._warned:
            self._warned.add(case)
            logger.warning(message, *args)


def default_retry_for(capabilities: Capabilities) -> RetryPolicy | None:
    """DEFAULT_RETRY as the provider can honour it: none where it cannot delay a retry or
    its plain RETRY already waits; capped at its longest delay."""
    if capabilities.delayed_retry is Support.NONE or capabilities.retry_waits:
        return None
    limit = capabilities.max_retry_delay
    if limit is not None and DEFAULT_RETRY.maximum > limit:
        return RetryPolicy(min(DEFAULT_RETRY.initial, limit), DEFAULT_RETRY.factor, limit)
    return DEFAULT_RETRY
