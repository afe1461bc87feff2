"""``loafer run --metrics-port``: Prometheus metrics of the routes (extra ``prometheus``).

One process serves ``/metrics`` itself (:class:`loafer_core.metrics.PrometheusMetrics`).
With ``--workers N`` the parent makes a directory, sets ``PROMETHEUS_MULTIPROC_DIR`` to
it (and :data:`AGGREGATED`) for the workers, which record there without serving; the
parent serves the sum of every worker's numbers on the port, and removes the directory
when it exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from loafer_core.errors import ConfigurationError
from loafer_core.manager import Manager

__all__ = ["AGGREGATED", "aggregated_metrics", "install_metrics"]

#: Set (to ``1``) in the workers' environment when the parent serves their metrics.
AGGREGATED = "LOAFER_METRICS_AGGREGATED"


def _metrics_module() -> Any:
    try:
        import loafer_core.metrics as metrics
    except ImportError:
        raise ConfigurationError(
            "--metrics-port needs prometheus-client: pip install 'loafer-core[prometheus]'"
        ) from None
    return metrics


def install_metrics(manager: Manager, port: int, host: str = "0.0.0.0") -> None:
    """Measure ``manager``'s routes; serve them on ``port``, or, in a worker whose parent
    aggregates (:data:`AGGREGATED`), only record them for the parent."""
    metrics = _metrics_module()
    if os.environ.get(AGGREGATED) == "1" and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics.PrometheusMetrics(port=None).install(manager)
    else:
        metrics.PrometheusMetrics(port=port, host=host).install(manager)


@contextlib.contextmanager
def aggregated_metrics(port: int, host: str = "0.0.0.0") -> Iterator[None]:
    """In the ``--workers`` parent: serve the workers' summed metrics on ``port`` while
    the block runs (the workers are started inside it, with this environment)."""
    metrics = _metrics_module()
    directory = tempfile.mkdtemp(prefix="loafer-metrics-")
    saved = {name: os.environ.get(name) for name in ("PROMETHEUS_MULTIPROC_DIR", AGGREGATED)}
    server = None
    try:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        os.environ[AGGREGATED] = "1"
        server = metrics.serve_multiprocess(port, host, directory)
        yield
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        for name, before in saved.items():
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before
        shutil.rmtree(directory, ignore_errors=True)
