"""``PostgresRoute``: a :class:`~loafer_core.route.Route` that builds its PostgresProvider."""

from __future__ import annotations

from typing import Any

from loafer_core.kit import ProviderRoute
from loafer_postgres.provider import PostgresProvider

__all__ = ["PostgresRoute"]


class PostgresRoute(ProviderRoute):
    """A route consuming queue ``queue`` of a PostgreSQL table.

    ``PostgresRoute("jobs", url="postgresql://app@db/app", handler=handle,
    max_concurrency=20, max_attempts=5)``

    Keyword arguments that :class:`~loafer_postgres.provider.PostgresProvider` takes
    (``url``, ``table``, ``schema``, ``lease``, ``poll_interval``, ``batch_size``, ...)
    configure the provider; ``provider_options`` may give them as a mapping instead.
    Every other keyword goes to :class:`~loafer_core.route.Route` (``handler``, ``name``,
    ``translator``, ``error_handler``, ``max_concurrency``, ``handler_timeout``,
    ``max_attempts``, ``retry``).
    """

    provider: PostgresProvider
    provider_type = PostgresProvider
    system = "postgres"

    def default_name(self, queue: str, provider: Any) -> str:
        """``postgres:{table}/{queue}``."""
        return f"postgres:{provider.settings.table}/{queue}"
