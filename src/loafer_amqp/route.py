"""``AMQPRoute``: a :class:`~loafer_core.route.Route` that builds its AMQPProvider."""

from __future__ import annotations

from typing import Any

from loafer_amqp.provider import AMQPProvider
from loafer_core.kit import ProviderRoute

__all__ = ["AMQPRoute"]


class AMQPRoute(ProviderRoute):
    """A route consuming AMQP 1.0 address ``address``.

    ``AMQPRoute("/amq/queue/orders", url="amqp://user:pass@host:5672", handler=handle,
    max_concurrency=50)``

    Keyword arguments that :class:`~loafer_amqp.provider.AMQPProvider` takes (``url``,
    ``broker``, ``user``, ``password``, ``ssl_ca``, ``fetch_wait``, ...) configure the
    provider; ``provider_options`` may give them as a mapping instead. Every other keyword
    goes to :class:`~loafer_core.route.Route` (``handler``, ``name``, ``translator``,
    ``error_handler``, ``max_concurrency``, ``handler_timeout``, ``max_attempts``,
    ``retry``). The receiver's credit is ``max_concurrency``.
    """

    provider: AMQPProvider
    provider_type = AMQPProvider
    system = "amqp"
    queue_option = "address"

    def build_provider(self, queue: str, options: dict[str, Any]) -> Any:
        """The provider, on ``amqp://127.0.0.1:5672`` unless ``url`` (or ``connection``)
        says otherwise."""
        if "connection" not in options:
            options.setdefault("url", "amqp://127.0.0.1:5672")
        return AMQPProvider(address=queue, **options)
