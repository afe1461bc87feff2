"""The handler under the route's ``handler_timeout``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from loafer_core._handler import HandlerOverrun, InThreads, settle_result
from loafer_core._message_errors import MessageErrors
from loafer_core.provider import Delivery


class Deadline:
    """Calls the handler with a deadline: an overrun gives ``False`` (RETRY), logged.

    A sync handler's deadline runs from when its thread starts the call (waiting for a
    thread is not the handler's fault); its thread, still running, counts as stuck until
    the call returns (see :attr:`Route.stuck_handlers <loafer_core.route.Route.stuck_handlers>`).
    """

    def __init__(
        self, call: Any, timeout: float, errors: MessageErrors, max_concurrency: int
    ) -> None:
        self.call = call
        self.timeout = timeout
        self.errors = errors
        self.max_concurrency = max_concurrency

    async def __call__(self, content: Any, metadata: Mapping[str, Any], delivery: Delivery) -> Any:
        call, errors = self.call, self.errors
        if isinstance(call, InThreads):
            try:
                result = await call.call_with_deadline(self.timeout, content, metadata)
            except HandlerOverrun:
                errors.log(
                    None,
                    delivery,
                    "route %r: handler timed out after %ss on message %s; it will be retried "
                    "(its thread is still in the call: %d of the route's %d are stuck)",
                    errors.route,
                    self.timeout,
                    delivery.message_id,
                    call.stuck,
                    self.max_concurrency,
                )
                return False
            return await settle_result(result)
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                return await settle_result(await call(content, metadata))
        except TimeoutError:
            if not deadline.expired():
                raise  # the handler's own TimeoutError: an error like any other
            errors.log(
                None,
                delivery,
                "route %r: handler timed out after %ss on message %s; it will be retried",
                errors.route,
                self.timeout,
                delivery.message_id,
            )
            return False
