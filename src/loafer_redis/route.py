"""``RedisRoute``: a :class:`~loafer_core.route.Route` that builds its RedisProvider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loafer_core.errors import ConfigurationError
from loafer_core.route import Route, split_provider_options
from loafer_redis.provider import RedisProvider

__all__ = ["RedisRoute"]


class RedisRoute(Route):
    """A route consuming Redis stream ``stream`` through a consumer group.

    ``RedisRoute("orders", url="redis://:secret@host:6379/0", group="billing",
    handler=handle, max_concurrency=50, max_attempts=5, create=True)``

    Keyword arguments that :class:`~loafer_redis.provider.RedisProvider` takes (``url``,
    ``group``, ``create``, ``lease``, ``dead_letter``, ...) configure the provider;
    ``provider_options`` may give them as a mapping instead. Every other keyword goes to
    :class:`~loafer_core.route.Route` (``handler``, ``name``, ``translator``,
    ``error_handler``, ``max_concurrency``, ``handler_timeout``, ``max_attempts``,
    ``retry``). The reader's buffer follows ``max_concurrency``.
    """

    provider: RedisProvider

    def __init__(
        self,
        stream: str,
        *,
        handler: Any = None,
        provider_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        provider_kwargs, route_kwargs = split_provider_options(
            "RedisRoute", RedisProvider, options, provider_options, exclude=("stream",)
        )
        provider = RedisProvider(stream, **provider_kwargs)
        route_kwargs.setdefault("name", f"redis:{stream}:{provider.group}")
        try:
            super().__init__(provider, handler, **route_kwargs)
        except TypeError as exc:
            raise ConfigurationError(f"RedisRoute: {exc}") from None
