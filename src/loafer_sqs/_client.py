"""Client construction shared by the provider and the publishers.

One long-lived aiobotocore client per object; credentials come from the standard AWS
chain (environment, profile, instance role) unless given explicitly. Credentials are
never stored in reprs or logged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

# Imported with the plugin, not when a client opens: a missing aiobotocore must make
# load_provider("sqs") fail, naming the extra to install (loafer_core.plugins).
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from loafer_core.errors import ConfigurationError
from loafer_sqs._timeouts import CONNECT_TIMEOUT, Timeouts
from loafer_sqs.errors import cause, mask, protect, translate_error

__all__ = ["ClientOptions", "open_client"]

_ALLOWED = frozenset(
    {
        "region_name",
        "endpoint_url",
        "use_ssl",
        "verify",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "profile_name",
        "config",
        "session",
    }
)


class ClientOptions:
    """Where and how to connect: region, endpoint, credentials, botocore ``config``, or
    an aiobotocore ``session`` of your own (its registered event handlers apply).

    Unknown keys raise :class:`ConfigurationError` naming them (a typo must not be
    ignored silently). ``repr`` never shows the credentials (nor those of a URL).
    """

    def __init__(self, options: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        merged: dict[str, Any] = dict(options or {})
        merged.update(kwargs)
        merged = {k: v for k, v in merged.items() if v is not None}
        unknown = sorted(set(merged) - _ALLOWED)
        if unknown:
            raise ConfigurationError(
                f"unknown SQS client option(s) {unknown}; allowed: {sorted(_ALLOWED)}"
            )
        self._options = merged
        # every provider and publisher builds one: botocore's loggers get their filter
        protect()

    @property
    def endpoint_url(self) -> str | None:
        """The endpoint URL, if one was given (LocalStack, moto, a VPC endpoint)."""
        value = self._options.get("endpoint_url")
        return str(value) if value is not None else None

    @property
    def region_name(self) -> str | None:
        """The region, if one was given (else the AWS configuration's)."""
        value = self._options.get("region_name")
        return value if isinstance(value, str) and value else None

    def __repr__(self) -> str:
        shown = {
            k: v
            for k, v in self._options.items()
            if k in {"region_name", "endpoint_url", "use_ssl", "profile_name"}
        }
        if "endpoint_url" in shown:
            shown["endpoint_url"] = mask(shown["endpoint_url"])
        return f"ClientOptions({shown!r})"

    def client_kwargs(
        self, max_pool_connections: int, defaults: AioConfig | None = None
    ) -> tuple[Any, str | None, dict[str, Any]]:
        """``(session, profile_name, kwargs for session.create_client)``; ``defaults``
        (timeouts) apply where the user's ``config`` does not say otherwise."""
        kwargs = dict(self._options)
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
    options: ClientOptions,
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
    session, profile, kwargs = options.client_kwargs(max_pool_connections, defaults)
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
