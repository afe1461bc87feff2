"""What a RabbitMQ provider or publisher says of itself (:class:`~loafer_core.kit.Describable`),
read from its settings."""

from __future__ import annotations

from typing import Any

from loafer_core import kit
from loafer_rabbit.errors import mask_url, vhost_of
from loafer_rabbit.settings import RabbitPublisherSettings, RabbitSettings

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


def provider(settings: RabbitSettings) -> kit.Description:
    """A consumer of the settings' queue; its durability when start() declares it."""
    url, queue = settings.connection.url, settings.queue
    masked_url = mask_url(url)
    described: dict[str, Any] = {"name": queue, "vhost": vhost_of(url)}
    if settings.topology.declare:
        described["durable"] = settings.topology.durable
    return kit.Description(
        kind="rabbit",
        system="rabbitmq",
        destination=queue,
        address=masked_url,
        server=server(masked_url),
        bindings={"amqp": {"is": "queue", "queue": described, "bindingVersion": AMQP_BINDING}},
        operation_bindings={"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}},
    )


def publisher(settings: RabbitPublisherSettings) -> kit.Description:
    """A publisher to the settings' exchange with their routing key."""
    url, exchange = settings.connection.url, settings.exchange
    masked_url = mask_url(url)
    described: dict[str, Any] = {"name": exchange, "vhost": vhost_of(url)}
    if exchange == "":
        described["type"] = "default"
    return kit.Description(
        kind="rabbit",
        system="rabbitmq",
        destination=settings.routing_key,
        address=masked_url,
        server=server(masked_url),
        bindings={
            "amqp": {"is": "routingKey", "exchange": described, "bindingVersion": AMQP_BINDING}
        },
        operation_bindings={
            "amqp": {
                "deliveryMode": 2 if settings.persistent else 1,
                "mandatory": bool(settings.mandatory),
                "bindingVersion": AMQP_BINDING,
            }
        },
    )
