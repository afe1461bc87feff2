"""What a Kafka provider or publisher says of itself (:class:`~loafer_core.kit.Describable`)."""

from __future__ import annotations

from typing import Any

from loafer_core import kit

#: AsyncAPI's kafka bindings version.
KAFKA_BINDING = "0.5.0"


def server(hosts: str, tls: bool) -> kit.Server | None:
    """Protocol ``kafka`` (``kafka-secure`` with TLS), the first bootstrap server."""
    first = hosts.split(",")[0]
    if not first:
        return None
    return kit.Server(
        protocol="kafka-secure" if tls else "kafka",
        host=first,
        description=f"Kafka bootstrap servers {hosts}",
    )


def provider(
    url: str, hosts: str, topic: str, group: str, dead: str | None, partitions: int | None
) -> kit.Description:
    """A topic consumed by a consumer group."""
    channel: dict[str, Any] = {"topic": topic, "bindingVersion": KAFKA_BINDING}
    if partitions:
        channel["partitions"] = partitions
    return kit.Description(
        kind="kafka",
        system="kafka",
        destination=topic,
        address=url,
        server=server(hosts, url.startswith("kafkas://")),
        bindings={"kafka": channel},
        operation_bindings={
            "kafka": {
                "groupId": {"type": "string", "enum": [group]},
                "bindingVersion": KAFKA_BINDING,
            }
        },
        summary=f"Kafka topic {topic!r}, consumer group {group!r}"
        + (f", dead letters to {dead!r}" if dead else ""),
        extensions={"x-loafer-kafka": {"group": group, "dead_letter_topic": dead}},
    )


def publisher(url: str, hosts: str, topic: str | None) -> kit.Description:
    """A producer to ``topic``."""
    return kit.Description(
        kind="kafka",
        system="kafka",
        destination=topic,
        address=url,
        server=server(hosts, url.startswith("kafkas://")),
        bindings={"kafka": {"topic": topic, "bindingVersion": KAFKA_BINDING}} if topic else {},
        summary=f"Kafka topic {topic!r}" if topic else None,
    )
