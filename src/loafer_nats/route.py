"""``NATSRoute``: a :class:`~loafer_core.route.Route` that builds its NATSProvider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loafer_core.errors import ConfigurationError
from loafer_core.route import Route, split_provider_options
from loafer_nats.provider import NATSProvider

__all__ = ["NATSRoute"]


class NATSRoute(Route):
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

    def __init__(
        self,
        stream: str,
        *,
        handler: Any = None,
        provider_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        provider_kwargs, route_kwargs = split_provider_options(
            "NATSRoute", NATSProvider, options, provider_options, exclude=("stream",)
        )
        provider = NATSProvider(stream, **provider_kwargs)
        route_kwargs.setdefault("name", f"nats:{stream}/{provider.consumer}")
        try:
            super().__init__(provider, handler, **route_kwargs)
        except TypeError as exc:
            raise ConfigurationError(f"NATSRoute: {exc}") from None
