"""``loafer providers``: every installed provider plugin, whether it loads, what it can do."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from loafer_core.plugins import ProviderInfo, available_providers, load_provider
from loafer_core.provider import Capabilities, Support

__all__ = [
    "LEGEND",
    "capabilities_of",
    "describe_capabilities",
    "print_providers",
    "providers_table",
]


def _memory(cls: Any) -> Any:
    from loafer_core.memory import MemoryBroker

    return cls(MemoryBroker(), "queue")


# How to build each bundled provider with its default options and without connecting
# (constructors only validate and store): capabilities are instance properties that
# depend on options (and, for SQS, on the queue once started).
_SAMPLES: dict[str, Callable[[Any], Any]] = {
    "memory": _memory,
    "rabbit": lambda cls: cls("queue"),
    "amqp": lambda cls: cls("amqp://localhost", "/amq/queue/queue"),
    "sqs": lambda cls: cls("queue", region_name="us-east-1"),
    "nats": lambda cls: cls("stream"),
    "redis": lambda cls: cls("stream"),
    "postgres": lambda cls: cls("queue"),
    "pubsub": lambda cls: cls("subscription", project="project"),
    "kafka": lambda cls: cls("topic"),
}


#: What "native" and "emulated" mean, under the table (routes accept either).
LEGEND = (
    "native: the broker does it itself; emulated: the plugin builds it client-side "
    "(a copy re-published, a delivery held for a delay), with a cost or a window on a "
    "crash: see the provider's docs. A route needing an ability accepts either."
)


def capabilities_of(info: ProviderInfo) -> Capabilities | None:
    """The capabilities of the plugin's provider built with its default options, or
    ``None`` when that cannot be known without a connection (not loading, or a plugin of
    another distribution whose ``capabilities`` is a property: declared as a class
    attribute, as the example plugin does, they are shown)."""
    if not info.loads:
        return None
    declared = None
    try:
        cls = load_provider(info.name)
        declared = getattr(cls, "capabilities", None)
        if isinstance(declared, Capabilities):  # a class-level declaration
            return declared
        sample = _SAMPLES.get(info.name)
        if sample is None:
            return None
        caps = sample(cls).capabilities
    except Exception:
        return None
    return caps if isinstance(caps, Capabilities) else None


def describe_capabilities(caps: Capabilities | None) -> str:
    """``name (native|emulated)`` for each ability supported, and the retry-delay limit."""
    if caps is None:
        return "-"
    parts: list[str] = []
    for field in dataclasses.fields(caps):
        value = getattr(caps, field.name)
        if isinstance(value, Support):
            if value is not Support.NONE:
                parts.append(f"{field.name} ({value.value})")
        elif value is not None:
            parts.append(f"{field.name}={value:.0f}s")
    return ", ".join(parts) or "none"


def providers_table() -> Table:
    """A Rich table of :func:`~loafer_core.plugins.available_providers`."""
    table = Table(title="Installed provider plugins", caption=LEGEND, show_lines=True)
    table.add_column("name", no_wrap=True)
    table.add_column("distribution", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("loads")
    table.add_column("capabilities (default options)")
    for info in available_providers():
        loads = "yes" if info.loads else f"no: {info.error}"
        table.add_row(
            info.name,
            info.distribution or "-",
            info.version or "-",
            loads,
            describe_capabilities(capabilities_of(info)),
        )
    return table


def print_providers(console: Console) -> None:
    """Print :func:`providers_table` on ``console``."""
    console.print(providers_table())
