"""``PubSubRoute``: a :class:`~loafer_core.route.Route` that builds its PubSubProvider."""

from __future__ import annotations

from typing import Any

from loafer_core.kit import ProviderRoute
from loafer_pubsub.provider import PubSubProvider

__all__ = ["PubSubRoute"]


class PubSubRoute(ProviderRoute):
    """A route consuming Pub/Sub subscription ``subscription``.

    ``PubSubRoute("orders-billing", project="shop", handler=handle, max_concurrency=50,
    max_attempts=5)``

    Keyword arguments that :class:`~loafer_pubsub.provider.PubSubProvider` takes
    (``project``, ``emulator_host``, ``service_file``, ``create``, ``topic``,
    ``dead_letter_topic``, ...) configure the provider; ``provider_options`` may give
    them as a mapping instead. Every other keyword goes to
    :class:`~loafer_core.route.Route`. Pulls follow ``max_concurrency`` (the route's
    free capacity is the flow control).
    """

    provider: PubSubProvider
    provider_type = PubSubProvider
    system = "gcp_pubsub"
    queue_option = "subscription"

    def default_name(self, queue: str, provider: Any) -> str:
        """``pubsub:{project}/{queue}``."""
        return f"pubsub:{provider.project}/{queue}"
