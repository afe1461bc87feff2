"""aiokafka's connection keywords from a :class:`~loafer_core.settings.Connection`."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qs, unquote

from loafer_core.settings import Connection


def servers(url: str) -> tuple[list[str], str | None, str | None, dict[str, list[str]]]:
    """``(bootstrap servers, user, password, query)`` of a ``kafka://`` URL."""
    rest = url.partition("://")[2]
    rest, _, query = rest.partition("?")
    rest = rest.split("/", 1)[0]
    user = password = None
    if "@" in rest:
        info, _, rest = rest.rpartition("@")
        name, _, secret = info.partition(":")
        user, password = unquote(name), unquote(secret)
    hosts = [h if ":" in h.rsplit("]", 1)[-1] else f"{h}:9092" for h in rest.split(",") if h]
    return hosts, user, password, parse_qs(query)


def hosts_of(connection: Connection) -> str:
    """The bootstrap servers, comma-separated (no credentials)."""
    return ",".join(servers(connection.url)[0])


def options(connection: Connection, client_id: str) -> dict[str, Any]:
    """The keywords every aiokafka client of this plugin is built with."""
    hosts, user, password, query = servers(connection.url)
    tls = connection.url.startswith("kafkas://")
    out: dict[str, Any] = {"bootstrap_servers": hosts, "client_id": client_id}
    if tls:
        out["ssl_context"] = connection.tls or ssl.create_default_context()
    if user is not None:
        out["security_protocol"] = "SASL_SSL" if tls else "SASL_PLAINTEXT"
        out["sasl_mechanism"] = query.get("mechanism", ["PLAIN"])[0]
        out["sasl_plain_username"] = user
        out["sasl_plain_password"] = password or ""
    elif tls:
        out["security_protocol"] = "SSL"
    out.update(connection.options)
    return out
