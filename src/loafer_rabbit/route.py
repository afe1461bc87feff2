"""``RabbitRoute``: a :class:`~loafer_core.route.Route` that builds its RabbitProvider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loafer_core.errors import ConfigurationError
from loafer_core.route import Route, split_provider_options
from loafer_rabbit.provider import RabbitProvider

__all__ = ["RabbitRoute"]


class RabbitRoute(Route):
    """A route consuming RabbitMQ queue ``queue`` (as Loafer's ``SQSRoute`` does for SQS).

    ``RabbitRoute("orders", url="amqp://user:pass@host/vhost", handler=handle,
    max_concurrency=50, max_attempts=5, dead_letter=True)``

    Keyword arguments that :class:`~loafer_rabbit.provider.RabbitProvider` takes
    (``url``, ``declare``, ``delayed_retry``, ``dead_letter``, ...) configure the provider;
    ``provider_options`` may give them as a mapping instead. Every other keyword goes to
    :class:`~loafer_core.route.Route` (``handler``, ``name``, ``translator``,
    ``error_handler``, ``max_concurrency``, ``handler_timeout``, ``max_attempts``,
    ``retry``). The provider's prefetch follows ``max_concurrency``.
    """

    provider: RabbitProvider

    def __init__(
        self,
        queue: str,
        *,
        handler: Any = None,
        provider_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        provider_kwargs, route_kwargs = split_provider_options(
            "RabbitRoute", RabbitProvider, options, provider_options, exclude=("queue",)
        )
        provider = RabbitProvider(queue, **provider_kwargs)
        route_kwargs.setdefault("name", f"rabbit:{queue}")
        try:
            super().__init__(provider, handler, **route_kwargs)
        except TypeError as exc:
            raise ConfigurationError(f"RabbitRoute: {exc}") from None
