"""Provider plugin discovery through the ``loafer.providers`` entry point group (stevedore).

``load_provider(name)`` imports only that plugin and returns its provider class (call it
with the plugin's options). ``available_providers()`` reports every installed provider:
name, distribution, version, and whether it loads (with the reason when not).

Core never imports a plugin package: plugins are reached only through entry points.
"""

from __future__ import annotations

import importlib.metadata as metadata
from dataclasses import dataclass
from typing import Any

from loafer_core.errors import ConfigurationError

__all__ = [
    "ENTRY_POINT_GROUP",
    "ProviderInfo",
    "available_providers",
    "load_provider",
    "provider_kind",
]

ENTRY_POINT_GROUP = "loafer.providers"

# The extra of the loafer-core distribution that installs each bundled plugin's library.
_EXTRAS = {"sqs": "sqs", "amqp": "amqp", "rabbit": "rabbit", "nats": "nats", "redis": "redis"}


@dataclass(frozen=True)
class ProviderInfo:
    """One installed provider plugin."""

    name: str
    value: str
    distribution: str | None
    version: str | None
    loads: bool
    error: str | None = None


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def _dist(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _missing_dependency_message(
    name: str, ep_value: str, distribution: str | None, exc: ImportError
) -> str:
    missing = getattr(exc, "name", None) or str(exc)
    plugin_module = ep_value.split(":")[0]
    if missing == plugin_module or plugin_module.startswith(f"{missing}."):
        return (
            f"provider {name!r} ({ep_value}) cannot be loaded: its module {missing!r} is not "
            "installed (a broken or partial installation of "
            f"{distribution or 'the plugin'}; reinstall it)"
        )
    extra = _EXTRAS.get(name)
    if extra is not None and distribution in (None, "loafer-core", "loafer_core"):
        how = f"pip install 'loafer-core[{extra}]'"
    elif distribution:
        how = f"install the dependencies of {distribution} (pip install {distribution})"
    else:
        how = "install the plugin's dependencies"
    return (
        f"provider {name!r} ({ep_value}) cannot be loaded: the module {missing!r} is missing; {how}"
    )


def load_provider(name: str) -> Any:
    """Load the provider plugin registered as ``name`` and return its provider class.

    Raises ``ConfigurationError`` for an unknown name (listing the installed ones) or a
    plugin whose optional dependency is missing (naming the extra to install).
    """
    from stevedore import DriverManager  # imported here: no cost for `import loafer_core`

    all_eps = _entry_points()
    eps = {ep.name: ep for ep in all_eps}
    ep = eps.get(name)
    claims = {
        (_dist(e)[0] or "an unnamed distribution", e.value) for e in all_eps if e.name == name
    }
    if len(claims) > 1:
        owners = "; ".join(f"{dist} ({value})" for dist, value in sorted(claims))
        raise ConfigurationError(
            f"provider name {name!r} is registered by more than one distribution in the "
            f"{ENTRY_POINT_GROUP!r} entry point group: {owners}; uninstall one of them "
            "(each plugin needs a name of its own)"
        )
    if ep is None:
        installed = ", ".join(sorted(eps)) or "none"
        raise ConfigurationError(
            f"no provider named {name!r} in the {ENTRY_POINT_GROUP!r} entry point group; "
            f"installed: {installed}"
        )
    failure: list[BaseException] = []

    def on_failure(_manager: Any, _ep: Any, exc: BaseException) -> None:
        failure.append(exc)

    try:
        driver = DriverManager(
            ENTRY_POINT_GROUP,
            name,
            invoke_on_load=False,
            on_load_failure_callback=on_failure,
        )
    except Exception as exc:
        failure.append(exc)
        driver = None
    if failure or driver is None:
        error = failure[0] if failure else RuntimeError("unknown load failure")
        distribution, _ = _dist(ep)
        if isinstance(error, ImportError):
            raise ConfigurationError(
                _missing_dependency_message(name, ep.value, distribution, error)
            ) from error
        raise ConfigurationError(
            f"provider {name!r} ({ep.value}) failed to load: {type(error).__name__}: {error}"
        ) from error
    return driver.driver


def available_providers() -> list[ProviderInfo]:
    """Every installed provider plugin, whether it loads, and why not when it does not."""
    infos: list[ProviderInfo] = []
    seen: set[str] = set()
    for ep in sorted(_entry_points(), key=lambda e: e.name):
        if ep.name in seen:
            continue
        seen.add(ep.name)
        distribution, version = _dist(ep)
        try:
            load_provider(ep.name)
        except ConfigurationError as exc:
            infos.append(ProviderInfo(ep.name, ep.value, distribution, version, False, str(exc)))
        else:
            infos.append(ProviderInfo(ep.name, ep.value, distribution, version, True))
    return infos


_kinds: dict[type, str] = {}


def provider_kind(provider: object) -> str:
    """The name the provider's class is registered under in the ``loafer.providers``
    entry point group (``rabbit``, ``sqs``, ``amqp``, ``memory``), else its class name
    in lower case."""
    cls = type(provider)
    kind = _kinds.get(cls)
    if kind is None:
        target = f"{cls.__module__}:{cls.__qualname__}"
        names = [
            ep.name
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
            if ep.value.replace(" ", "") == target
        ]
        kind = min(names) if names else cls.__name__.lower()
        _kinds[cls] = kind
    return kind
