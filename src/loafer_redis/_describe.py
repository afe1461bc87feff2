"""What a Redis provider or publisher says of itself (:class:`~loafer_core.kit.Describable`)."""

from __future__ import annotations

import re
from typing import Any

from loafer_core import kit

_SCHEMES = {"redis": "Redis", "rediss": "Redis over TLS"}
_DB = re.compile(r"/([0-9]{1,5})/?")


def server(masked_url: str) -> kit.Server | None:
    """Protocol ``redis``, ``host:port`` (6379 when the URL names none), the database
    number as the pathname (``/0`` left out); a ``unix://`` socket: no server."""
    found = kit.host_of(masked_url)
    if found is None or found[1] not in _SCHEMES:
        return None
    host, scheme = found
    rest = masked_url.partition("://")[2]
    path = re.split(r"[?#]", rest[rest.rfind("@") + 1 :], maxsplit=1)[0].partition("/")
    db = _DB.fullmatch(path[1] + path[2]) if path[1] else None
    return kit.Server(
        protocol="redis",
        host=kit.with_port(host, 6379),
        pathname=f"/{int(db.group(1))}" if db is not None and int(db.group(1)) != 0 else None,
        description=_SCHEMES[scheme],
    )


def provider(masked_url: str, stream: str, group: str, dead_letter: str | None) -> kit.Description:
    """A consumer group of a stream."""
    # AsyncAPI's redis bindings are reserved, without fields: loafer's own extension
    extension: dict[str, Any] = {"group": group}
    if dead_letter:
        extension["deadLetterStream"] = dead_letter
    return kit.Description(
        kind="redis",
        system="redis",
        destination=stream,
        address=masked_url,
        server=server(masked_url),
        summary=f"Redis stream {stream!r}, consumer group {group!r}",
        extensions={"x-loafer-redis": extension},
    )


def publisher(masked_url: str, stream: str, maxlen: int | None) -> kit.Description:
    """A publisher adding to ``stream`` (XADD, trimmed to about ``maxlen``)."""
    trimmed = f", trimmed to about {maxlen} entries" if isinstance(maxlen, int) else ""
    return kit.Description(
        kind="redis",
        system="redis",
        destination=stream,
        address=masked_url,
        server=server(masked_url),
        summary=f"added to Redis stream {stream!r} (XADD){trimmed}",
    )
