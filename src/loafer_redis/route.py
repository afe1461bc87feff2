"""``RedisRoute``: a :class:`~loafer_core.route.Route` that builds its RedisProvider."""

from __future__ import annotations

from typing import Any

from loafer_core.kit import ProviderRoute
from loafer_redis.provider import RedisProvider

__all__ = ["RedisRoute"]


class RedisRoute(ProviderRoute):
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
    provider_type = RedisProvider
    system = "redis"
    queue_option = "stream"

    def default_name(self, queue: str, provider: Any) -> str:
        """``redis:{queue}:{provider.group}``."""
        return f"redis:{queue}:{provider.group}"
