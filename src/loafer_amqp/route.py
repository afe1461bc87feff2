"""``AMQPRoute``: a :class:`~loafer_core.route.Route` that builds its AMQPProvider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loafer_amqp.provider import AMQPProvider
from loafer_core.errors import ConfigurationError
from loafer_core.route import Route, split_provider_options

__all__ = ["AMQPRoute"]


class AMQPRoute(Route):
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

    def __init__(
        self,
        address: str,
        *,
        handler: Any = None,
        provider_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        provider_kwargs, route_kwargs = split_provider_options(
            "AMQPRoute", AMQPProvider, options, provider_options, exclude=("address",)
        )
        provider_kwargs.setdefault("url", "amqp://127.0.0.1:5672")
        provider = AMQPProvider(address=address, **provider_kwargs)
        route_kwargs.setdefault("name", f"amqp:{address}")
        try:
            super().__init__(provider, handler, **route_kwargs)
        except TypeError as exc:
            raise ConfigurationError(f"AMQPRoute: {exc}") from None
