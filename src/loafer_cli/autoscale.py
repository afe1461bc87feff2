"""``loafer autoscale``: Kubernetes autoscaling manifests from a service's routes.

:func:`build_manifests` reads a :class:`~loafer_core.Manager` (from a config file or a
module, connecting to nothing) and writes, for the Deployment that runs it:

- ``keda`` (default): a KEDA ``ScaledObject`` with one ``prometheus`` trigger per route,
  on that route's backlog gauge (``loafer_queue_backlog{route="..."}``, which every
  bundled provider reports: see docs/observability.md). KEDA scales the Deployment so
  that each replica has at most ``--target`` messages waiting, per route (the largest
  wins), between ``--min`` and ``--max`` replicas; ``--min 0`` lets an idle service
  scale to zero (KEDA then needs a trigger that does not come from the service itself:
  see docs/workers.md).
- ``hpa``: a plain ``autoscaling/v2`` HorizontalPodAutoscaler with one ``External``
  metric per route (the same gauge, served to Kubernetes by prometheus-adapter), for
  clusters without KEDA.

The gauge is read by Prometheus from the workers' ``--metrics-port``. No URL, password
or queue credential of the config appears in the output: only route names and the
broker kinds (as comments).
"""

from __future__ import annotations

import re
from typing import Any

from loafer_core.manager import Manager
from loafer_core.plugins import provider_kind

__all__ = ["build_manifests", "metric_query"]

_NAME = re.compile(r"[^a-z0-9-]+")


def _k8s_name(value: str) -> str:
    """``value`` as a Kubernetes object name (lower case, ``-``, at most 63 characters)."""
    name = _NAME.sub("-", value.lower()).strip("-")[:63].strip("-")
    return name or "loafer"


def _label(value: str) -> str:
    """``value`` inside a PromQL double-quoted label matcher."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def metric_query(route: str) -> str:
    """The PromQL of one route's backlog: the broker's count, as every replica reports it
    (``max``: each replica reports the same queue, so a sum would count it N times)."""
    return f'max(loafer_queue_backlog{{route="{_label(route)}"}})'


def build_manifests(
    manager: Manager,
    *,
    deployment: str,
    kind: str = "keda",
    target: int = 100,
    min_replicas: int = 1,
    max_replicas: int = 10,
    prometheus: str = "http://prometheus.monitoring.svc:9090",
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    """The manifests (as plain data) scaling ``deployment`` on ``manager``'s routes."""
    if kind not in ("keda", "hpa"):
        raise ValueError(f"kind: expected 'keda' or 'hpa', got {kind!r}")
    if not manager.routes:
        raise ValueError("the service has no route: nothing to scale on")
    if not 0 <= min_replicas <= max_replicas or max_replicas < 1:
        raise ValueError(
            f"--min {min_replicas} / --max {max_replicas}: expected 0 <= min <= max, max >= 1"
        )
    if target < 1:
        raise ValueError(f"--target {target}: expected a number of messages >= 1")
    name = _k8s_name(deployment)
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    routes = [(route.name, provider_kind(route.provider)) for route in manager.routes]
    if kind == "keda":
        return [
            _scaled_object(metadata, name, routes, target, min_replicas, max_replicas, prometheus)
        ]
    return [_hpa(metadata, name, routes, target, min_replicas, max_replicas)]


def _scaled_object(
    metadata: dict[str, Any],
    deployment: str,
    routes: list[tuple[str, str]],
    target: int,
    min_replicas: int,
    max_replicas: int,
    prometheus: str,
) -> dict[str, Any]:
    triggers = [
        {
            "type": "prometheus",
            "name": _k8s_name(f"{route}-backlog"),
            "metadata": {
                "serverAddress": prometheus,
                "query": metric_query(route),
                "threshold": str(target),
            },
        }
        for route, _broker in routes
    ]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            **metadata,
            "annotations": {
                "loafer.dev/routes": ", ".join(f"{r} ({b})" for r, b in routes),
            },
        },
        "spec": {
            "scaleTargetRef": {"name": deployment},
            "minReplicaCount": min_replicas,
            "maxReplicaCount": max_replicas,
            "pollingInterval": 15,
            # a drain takes up to the shutdown timeout: do not scale in faster than that
            "cooldownPeriod": 300,
            "triggers": triggers,
        },
    }


def _hpa(
    metadata: dict[str, Any],
    deployment: str,
    routes: list[tuple[str, str]],
    target: int,
    min_replicas: int,
    max_replicas: int,
) -> dict[str, Any]:
    metrics = [
        {
            "type": "External",
            "external": {
                "metric": {
                    "name": "loafer_queue_backlog",
                    "selector": {"matchLabels": {"route": route}},
                },
                "target": {"type": "AverageValue", "averageValue": str(target)},
            },
        }
        for route, _broker in routes
    ]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            **metadata,
            "annotations": {
                "loafer.dev/routes": ", ".join(f"{r} ({b})" for r, b in routes),
            },
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicas": max(1, min_replicas),
            "maxReplicas": max_replicas,
            "metrics": metrics,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }
