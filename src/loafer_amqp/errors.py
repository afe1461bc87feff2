"""Errors specific to the AMQP plugin (all are loafer-core errors)."""

from __future__ import annotations

from loafer_core.errors import PublishRefused as _PublishRefused

__all__ = ["PublishRefused"]


class PublishRefused(_PublishRefused):
    """The broker did not accept a published message (a
    :class:`loafer_core.errors.PublishRefused`, with the broker's outcome).

    ``outcome`` is the broker's answer (``"rejected"``, ``"released"`` or ``"modified"``)
    and ``condition`` its error condition text, if any.
    """

    def __init__(self, address: str, outcome: str, condition: str | None = None) -> None:
        detail = f": {condition}" if condition else ""
        super().__init__(f"the broker {outcome} a message sent to {address!r}{detail}")
        self.address = address
        self.outcome = outcome
        self.condition = condition
