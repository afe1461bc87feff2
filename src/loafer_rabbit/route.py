"""``RabbitRoute``: a :class:`~loafer_core.route.Route` that builds its RabbitProvider."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from loafer_core.errors import ConfigurationError
from loafer_core.route import Route
from loafer_rabbit.provider import RabbitProvider

__all__ = ["RabbitRoute"]

_PROVIDER_OPTIONS = frozenset(inspect.signature(RabbitProvider.__init__).parameters) - {
    "self",
    "queue",
}


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
        provider_kwargs = dict(provider_options or {})
        unknown = set(provider_kwargs) - _PROVIDER_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"RabbitRoute(provider_options=...): unknown option(s) {sorted(unknown)}; "
                f"RabbitProvider takes {sorted(_PROVIDER_OPTIONS)}"
            )
        route_kwargs: dict[str, Any] = {}
        for key, value in options.items():
            if key in _PROVIDER_OPTIONS:
                if key in provider_kwargs:
                    raise ConfigurationError(
                        f"RabbitRoute: {key!r} given both directly and in provider_options"
                    )
                provider_kwargs[key] = value
            else:
                route_kwargs[key] = value
        provider = RabbitProvider(queue, **provider_kwargs)
        route_kwargs.setdefault("name", f"rabbit:{queue}")
        try:
            super().__init__(provider, handler, **route_kwargs)
        except TypeError as exc:
            raise ConfigurationError(f"RabbitRoute: {exc}") from None
