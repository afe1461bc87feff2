"""``KafkaRoute``: a :class:`~loafer_core.route.Route` that builds its KafkaProvider."""

from __future__ import annotations

from typing import Any

from loafer_core.kit import ProviderRoute
from loafer_kafka.provider import KafkaProvider

__all__ = ["KafkaRoute"]


class KafkaRoute(ProviderRoute):
    """A route consuming Kafka topic ``topic`` in a consumer group.

    ``KafkaRoute("orders", group_id="billing", handler=handle, max_concurrency=50)``

    Keyword arguments that :class:`~loafer_kafka.provider.KafkaProvider` takes
    (``url``, ``group_id``, ``create``, ``dead_letter_topic``, ``ordering``, ...)
    configure the provider; ``provider_options`` may give them as a mapping instead.
    Every other keyword goes to :class:`~loafer_core.route.Route`.
    """

    provider: KafkaProvider
    provider_type = KafkaProvider
    system = "kafka"
    queue_option = "topic"

    def default_name(self, queue: str, provider: Any) -> str:
        """``kafka:{group}/{topic}``."""
        return f"kafka:{provider.group_id}/{queue}"
