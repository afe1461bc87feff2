"""Client construction shared by the provider and the publishers.

One long-lived aiobotocore client per object; credentials come from the standard AWS
chain (environment, profile, instance role) unless given explicitly
(:class:`~loafer_sqs.settings.AWSClient`). Credentials are never shown in reprs or logs.
"""

from __future__ import annotations

import contextlib
from typing import Any

# Imported with the plugin, not when a client opens: a missing aiobotocore must make
# load_provider("sqs") fail, naming the extra to install (loafer_core.plugins).
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from loafer_sqs._timeouts import CONNECT_TIMEOUT, Timeouts
from loafer_sqs.errors import cause, protect, translate_error
from loafer_sqs.settings import AWSClient

__all__ = ["client_kwargs", "open_client"]


def client_kwargs(
    options: AWSClient, max_pool_connections: int, defaults: AioConfig | None = None
) -> tuple[Any, str | None, dict[str, Any]]:
    """``(session, profile_name, kwargs for session.create_client)``; ``defaults``
    (timeouts) apply where the user's ``config`` does not say otherwise."""
    kwargs = options.given()
    session = kwargs.pop("session", None)
    profile = kwargs.pop("profile_name", None)
    config = kwargs.pop("config", None)
    merged = AioConfig(max_pool_connections=max_pool_connections)
    if defaults is not None:
        merged = merged.merge(defaults)
    kwargs["config"] = merged.merge(config) if config is not None else merged
    return session, profile, kwargs


async def open_client(
    service: str,
    options: AWSClient,
    stack: contextlib.AsyncExitStack,
    *,
    max_pool_connections: int = 10,
    timeouts: Timeouts | None = None,
) -> Any:
    """Create a client for ``service`` and register its closing on ``stack``.

    ``timeouts`` (default: connect timeout :data:`CONNECT_TIMEOUT`, botocore's read
    timeout) apply unless the user's ``config`` sets its own.
    """
    defaults = (
        timeouts.config() if timeouts is not None else AioConfig(connect_timeout=CONNECT_TIMEOUT)
    )
    session, profile, kwargs = client_kwargs(options, max_pool_connections, defaults)
    try:
        if session is None:
            session = get_session()
        if profile is not None:
            session.set_config_variable("profile", profile)
        client = await stack.enter_async_context(session.create_client(service, **kwargs))
    except Exception as exc:
        raise translate_error(exc, f"creating the {service} client") from cause(exc)
    protect()  # again: a logger created since then gets it too
    return client
