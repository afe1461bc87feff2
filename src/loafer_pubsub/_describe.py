"""What a Pub/Sub provider or publisher says of itself (:class:`~loafer_core.kit.Describable`)."""

from __future__ import annotations

from urllib.parse import urlsplit

from loafer_core import kit

#: AsyncAPI's googlepubsub bindings version. Its channel binding requires
#: ``schemaSettings`` (the topic's schema): a channel has one when the settings name the
#: schema (``schema=``), none otherwise; the server's protocol is ``googlepubsub`` and
#: the subscription and topic are in ``x-loafer-pubsub``.
GOOGLEPUBSUB_BINDING = "0.2.0"


def bindings(schema: str | None, encoding: str) -> dict[str, object]:
    """The ``googlepubsub`` channel binding when the topic's schema is known."""
    if schema is None:
        return {}
    settings = {"encoding": encoding, "name": schema}
    return {"googlepubsub": {"schemaSettings": settings, "bindingVersion": GOOGLEPUBSUB_BINDING}}


def server(root: str, emulator: bool) -> kit.Server | None:
    """Protocol ``googlepubsub``, the API's ``host:port`` (no credentials)."""
    parts = urlsplit(root)
    if not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return kit.Server(
        protocol="googlepubsub",
        host=kit.with_port(parts.hostname, port),
        description="Pub/Sub emulator" if emulator else "Google Cloud Pub/Sub",
    )


def provider(
    root: str,
    emulator: bool,
    subscription: str,
    topic: str | None,
    ordering: bool,
    binding: dict[str, object],
) -> kit.Description:
    """A pull subscription (its topic, when known, in the summary)."""
    return kit.Description(
        kind="pubsub",
        system="gcp_pubsub",
        destination=subscription,
        address=root,
        server=server(root, emulator),
        bindings=binding,
        summary=(
            f"Pub/Sub subscription {subscription!r}"
            + (f" of topic {topic!r}" if topic else "")
            + (" (ordered by key)" if ordering else "")
        ),
        extensions={"x-loafer-pubsub": {"subscription": subscription, "topic": topic}},
    )


def publisher(
    root: str, emulator: bool, topic: str | None, binding: dict[str, object]
) -> kit.Description:
    """A publisher to ``topic``."""
    return kit.Description(
        kind="pubsub",
        system="gcp_pubsub",
        destination=topic,
        address=root,
        server=server(root, emulator),
        bindings=binding,
        summary=f"Pub/Sub topic {topic!r}" if topic else None,
    )
