"""``NATSRoute``: a :class:`~loafer_core.route.Route` that builds its NATSProvider."""

from __future__ import annotations

from typing import Any

from loafer_core.kit import ProviderRoute
from loafer_nats.provider import NATSProvider

__all__ = ["NATSRoute"]


class NATSRoute(ProviderRoute):
    """A route consuming JetStream stream ``stream`` through a durable pull consumer.

    ``NATSRoute("ORDERS", url="nats://127.0.0.1:4222", consumer="billing",
    handler=handle, max_concurrency=50, max_attempts=5)``

    Keyword arguments that :class:`~loafer_nats.provider.NATSProvider` takes (``url``,
    ``consumer``, ``create``, ``subjects``, ``dead_letter_subject``, ...) configure the
    provider; ``provider_options`` may give them as a mapping instead. Every other
    keyword goes to :class:`~loafer_core.route.Route` (``handler``, ``name``,
    ``translator``, ``error_handler``, ``max_concurrency``, ``handler_timeout``,
    ``max_attempts``, ``retry``). Pull requests follow ``max_concurrency``.
    """

    provider: NATSProvider
    provider_type = NATSProvider
    system = "nats"
    queue_option = "stream"

    def default_name(self, queue: str, provider: Any) -> str:
        """``nats:{queue}/{provider.consumer}``."""
        return f"nats:{queue}/{provider.consumer}"
