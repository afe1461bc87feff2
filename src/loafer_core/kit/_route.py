"""``ProviderRoute``: the route of a plugin that builds its own provider.

A plugin's ``RabbitRoute("orders", url=..., handler=..., max_concurrency=50)`` is a
:class:`~loafer_core.route.Route` whose keywords are split: those the provider takes (its
settings' flat names, or its ``__init__``'s parameters) build the provider, the rest go to
the route. A plugin's ``route.py`` is then a subclass naming its provider::

    class RabbitRoute(ProviderRoute):
        provider_type = RabbitProvider
        system = "rabbit"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from loafer_core.errors import ConfigurationError
from loafer_core.route import Route, split_provider_options

__all__ = ["ProviderRoute"]


class ProviderRoute(Route):
    """A :class:`~loafer_core.route.Route` that builds its provider from its keywords.

    Subclasses set :attr:`provider_type` (called as ``provider_type(queue,
    **provider_keywords)``) and :attr:`system` (the default route name is
    ``"<system>:<queue>"``; override :meth:`default_name` for another). ``queue`` is the
    provider's first argument (a queue, a stream, an address); keywords the provider
    takes configure it, ``provider_options`` may give them as a mapping instead, and
    every other keyword goes to :class:`~loafer_core.route.Route` (``handler``, ``name``,
    ``translator``, ``error_handler``, ``max_concurrency``, ``handler_timeout``,
    ``max_attempts``, ``retry``, ...). A wrong keyword is a ``ConfigurationError``
    naming the route class.
    """

    provider_type: ClassVar[type[Any]]
    system: ClassVar[str]
    #: The provider keyword that ``queue`` fills (``queue`` may be given by this name,
    #: as a keyword, too).
    queue_option: ClassVar[str] = "queue"

    def __init__(
        self,
        queue: str | None = None,
        /,
        *,
        handler: Any = None,
        provider_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        owner = type(self).__name__
        if queue is None:
            queue = options.pop(self.queue_option, None)
        if not isinstance(queue, str) or not queue:
            raise ConfigurationError(
                f"{owner}({self.queue_option}=...): expected a name, got {queue!r}"
            )
        if provider_options is not None and not isinstance(provider_options, Mapping):
            raise ConfigurationError(
                f"{owner}(provider_options=...): expected a mapping of "
                f"{self.provider_type.__name__} options, got {type(provider_options).__name__}"
            )
        provider_kwargs, route_kwargs = split_provider_options(
            owner, self.provider_type, options, provider_options, exclude=(self.queue_option,)
        )
        provider = self.build_provider(queue, provider_kwargs)
        route_kwargs.setdefault("name", self.default_name(queue, provider))
        try:
            super().__init__(provider, handler, **route_kwargs)
        except TypeError as exc:
            raise ConfigurationError(f"{owner}: {exc}") from None

    def build_provider(self, queue: str, options: dict[str, Any]) -> Any:
        """The provider: ``provider_type(queue, **options)`` by default."""
        return self.provider_type(queue, **options)

    def default_name(self, queue: str, provider: Any) -> str:
        """The route's name when none is given: ``"<system>:<queue>"``."""
        return f"{self.system}:{queue}"
