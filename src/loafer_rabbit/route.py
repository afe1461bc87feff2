"""``RabbitRoute``: a :class:`~loafer_core.route.Route` that builds its RabbitProvider."""

from __future__ import annotations

from loafer_core.kit import ProviderRoute
from loafer_rabbit.provider import RabbitProvider

__all__ = ["RabbitRoute"]


class RabbitRoute(ProviderRoute):
    """A route consuming RabbitMQ queue ``queue`` (as Loafer's ``SQSRoute`` does for SQS).

    ``RabbitRoute("orders", url="amqp://user:pass@host/vhost", handler=handle,
    max_concurrency=50, max_attempts=5, dead_letter=True)``

    Keyword arguments that :class:`~loafer_rabbit.provider.RabbitProvider` takes (the
    flat names of :class:`~loafer_rabbit.settings.RabbitSettings`: ``url``, ``declare``,
    ``delayed_retry``, ``dead_letter``, ..., or its pieces: ``topology=Topology(...)``)
    configure the provider;
    ``provider_options`` may give them as a mapping instead. Every other keyword goes to
    :class:`~loafer_core.route.Route` (``handler``, ``name``, ``translator``,
    ``error_handler``, ``max_concurrency``, ``handler_timeout``, ``max_attempts``,
    ``retry``). The provider's prefetch follows ``max_concurrency``.
    """

    provider: RabbitProvider
    provider_type = RabbitProvider
    system = "rabbit"
