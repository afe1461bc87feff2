"""What a NATS provider or publisher says of itself (:class:`~loafer_core.kit.Describable`)."""

from __future__ import annotations

from loafer_core import kit

NATS_BINDING = "0.1.0"
#: the longest ``queue`` of the ``nats`` operation binding
_QUEUE_MAX = 255
_SCHEMES = {
    "nats": ("NATS", 4222),
    "tls": ("NATS over TLS", 4222),
    "ws": ("NATS over WebSocket", None),
    "wss": ("NATS over WebSocket with TLS", None),
}


def server(masked_url: str) -> kit.Server | None:
    """Protocol ``nats``, ``host:port`` (4222 when the URL names none, but for
    WebSocket), the transport in the server's description."""
    found = kit.host_of(masked_url)
    if found is None:
        return None
    host, scheme = found
    description, port = _SCHEMES.get(scheme, ("NATS", 4222))
    if port is not None:
        host = kit.with_port(host, port)
    return kit.Server(protocol="nats", host=host, description=description)


def provider(masked_url: str, stream: str, consumer: str) -> kit.Description:
    """A durable pull consumer of a JetStream stream."""
    # a durable consumer shares its messages among its workers, as a queue group does
    bindings = (
        {"nats": {"queue": consumer, "bindingVersion": NATS_BINDING}}
        if isinstance(consumer, str) and 0 < len(consumer) <= _QUEUE_MAX
        else {}
    )
    return kit.Description(
        kind="nats",
        system="nats",
        destination=stream,
        address=masked_url,
        server=server(masked_url),
        operation_bindings=bindings,
        summary=f"JetStream stream {stream!r}, durable pull consumer {consumer!r}",
    )


def publisher(masked_url: str, subject: str | None, stream: str | None) -> kit.Description:
    """A publisher to ``subject`` (stored by ``stream`` when named)."""
    return kit.Description(
        kind="nats",
        system="nats",
        destination=subject,
        address=masked_url,
        server=server(masked_url),
        summary=f"stored by JetStream stream {stream!r}" if stream else None,
    )
