"""What a RabbitMQ provider or publisher says of itself (:class:`~loafer_core.kit.Describable`)."""

from __future__ import annotations

from typing import Any

from loafer_core import kit

#: The AsyncAPI ``amqp`` bindings' version written.
AMQP_BINDING = "0.3.0"


def server(masked_url: str) -> kit.Server | None:
    """The AsyncAPI server of a (masked) AMQP URL: ``amqp`` or ``amqps``, 5672/5671."""
    found = kit.host_of(masked_url)
    if found is None:
        return None
    host, scheme = found
    tls = scheme == "amqps"
    return kit.Server(
        protocol="amqps" if tls else "amqp",
        host=kit.with_port(host, 5671 if tls else 5672),
        protocol_version="0-9-1",
    )


def provider(masked_url: str, queue: str, vhost: str, durable: bool | None) -> kit.Description:
    """A consumer of ``queue``; ``durable`` is what start() declares (None: nothing)."""
    described: dict[str, Any] = {"name": queue, "vhost": vhost}
    if durable is not None:
        described["durable"] = durable
    return kit.Description(
        kind="rabbit",
        system="rabbitmq",
        destination=queue,
        address=masked_url,
        server=server(masked_url),
        bindings={"amqp": {"is": "queue", "queue": described, "bindingVersion": AMQP_BINDING}},
        operation_bindings={"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}},
    )


def publisher(
    masked_url: str,
    vhost: str,
    exchange: str,
    routing_key: str | None,
    *,
    persistent: bool,
    mandatory: bool,
) -> kit.Description:
    """A publisher to ``exchange`` with ``routing_key``."""
    described: dict[str, Any] = {"name": exchange, "vhost": vhost}
    if exchange == "":
        described["type"] = "default"
    return kit.Description(
        kind="rabbit",
        system="rabbitmq",
        destination=routing_key,
        address=masked_url,
        server=server(masked_url),
        bindings={
            "amqp": {"is": "routingKey", "exchange": described, "bindingVersion": AMQP_BINDING}
        },
        operation_bindings={
            "amqp": {
                "deliveryMode": 2 if persistent else 1,
                "mandatory": mandatory,
                "bindingVersion": AMQP_BINDING,
            }
        },
    )
