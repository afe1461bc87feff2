"""The ``loafer`` command's entry point (a Typer application).

Exit codes: 0 success (``run``: after a clean drain); 1 a problem found (``check``,
``publish``) or a crash; 2 bad usage; 78 (``EX_CONFIG``) a configuration error: a bad
target or config file, a provider that cannot be built, a fatal route error.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from loafer_core.errors import ConfigurationError
from loafer_core.manager import Manager
from loafer_core.route import Route

__all__ = ["EX_CONFIG", "app", "build_manager", "load_routes", "main", "run_target"]

EX_CONFIG = 78
logger = logging.getLogger("loafer_cli")

app = typer.Typer(
    name="loafer",
    help="Run loafer-core routes as a service, check them, list providers, publish messages.",
    no_args_is_help=True,
    add_completion=False,
)


class LogFormat(StrEnum):
    """Log line formats."""

    plain = "plain"
    json = "json"


class LogLevel(StrEnum):
    """Log levels."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _error(message: str) -> None:
    print(f"loafer: error: {message}", file=sys.stderr, flush=True)


@contextmanager
def _config_errors() -> Iterator[None]:
    """A ConfigurationError becomes exit code 78 and one ``loafer: error:`` line on stderr
    per problem (a config file's errors list one problem per line)."""
    try:
        yield
    except ConfigurationError as exc:
        problems = [" ".join(line.split()) for line in str(exc).splitlines()]
        for problem in [p for p in problems if p] or ["configuration error"]:
            _error(problem)
        raise typer.Exit(EX_CONFIG) from None


def _config_module() -> Any:
    from loafer_cli._target import importable_cwd

    importable_cwd()  # the config's handlers are import paths, maybe of the app's modules
    try:
        return importlib.import_module("loafer_cli.config")
    except ModuleNotFoundError as exc:  # pragma: no cover - until the config module lands
        raise ConfigurationError("--config: this installation cannot read config files") from exc


def _config_path(target: str | None, config_file: Path | None) -> Path | None:
    if target is not None and config_file is not None:
        raise ConfigurationError("give MODULE:ATTR or --config, not both")
    if target is not None:
        return None
    if config_file is not None:
        return config_file
    found = _config_module().find_config(Path.cwd())
    if found is None:
        raise ConfigurationError(
            "nothing to run: give MODULE:ATTR (e.g. 'app:routes') or --config FILE "
            "(no loafer.toml found here)"
        )
    return Path(found)


def load_routes(target: str | None, config_file: Path | None) -> list[Route]:
    """The routes named by ``MODULE:ATTR`` or the config file (without running them)."""
    from loafer_cli._target import load_target, routes_of

    path = _config_path(target, config_file)
    if path is not None:
        config = _config_module()
        return list(config.build_routes(config.load_config(path)))
    assert target is not None
    return routes_of(load_target(target))


def build_manager(
    target: str | None,
    config_file: Path | None,
    *,
    shutdown_timeout: float | None = None,
    health_port: int | None = None,
    health_host: str | None = None,
    status_interval: float | None = None,
    tracing: bool | None = None,
) -> Manager:
    """The Manager for ``MODULE:ATTR`` or the config file; the options given (not None)
    override the target's own (``tracing``: the config's ``[manager] tracing``)."""
    from loafer_cli._target import load_target

    path = _config_path(target, config_file)
    if path is not None:
        config = _config_module()
        manager: Manager = config.build_manager(config.load_config(path))
    else:
        assert target is not None
        loaded = load_target(target)
        manager = loaded if isinstance(loaded, Manager) else Manager(loaded)
    if shutdown_timeout is not None:
        manager.shutdown_timeout = float(shutdown_timeout)
    if health_port is not None:
        manager.health_port = health_port
    if health_host is not None:
        manager.health_host = health_host
    if status_interval is not None:
        manager.status_interval = status_interval
    if tracing is not None:
        _set_tracing(manager, tracing)
    return manager


def _set_tracing(manager: Manager, on: bool) -> None:
    """``--tracing``: the tracing middleware outermost of the manager's (unless it has
    one); ``--no-tracing``: none among the manager's middleware."""
    from loafer_core.ext.otel import Tracing

    traced = [m for m in manager.middleware if isinstance(m, Tracing)]
    if not on:
        manager.middleware = [m for m in manager.middleware if not isinstance(m, Tracing)]
    elif not traced:
        from loafer_cli._config_middleware import MiddlewareProblem, tracing_middleware

        try:
            manager.middleware.insert(0, tracing_middleware())
        except MiddlewareProblem as exc:
            raise ConfigurationError(f"--tracing: {exc.message}") from None


def run_target(
    target: str | None,
    config_file: Path | None,
    *,
    shutdown_timeout: float | None = None,
    health_port: int | None = None,
    health_host: str | None = None,
    status_interval: float | None = None,
    live: bool = False,
    metrics_port: int | None = None,
    tracing: bool | None = None,
) -> None:
    """Build the Manager and run it until SIGINT/SIGTERM (returns after a clean drain;
    raises ConfigurationError on a fatal configuration error); with ``live``, under the
    live table of :mod:`loafer_cli.live`."""
    from loafer_cli.live import live_view

    manager = build_manager(
        target,
        config_file,
        shutdown_timeout=shutdown_timeout,
        health_port=health_port,
        health_host=health_host,
        status_interval=status_interval,
        tracing=tracing,
    )
    if metrics_port is not None:
        from loafer_cli.metrics import install_metrics

        install_metrics(manager, metrics_port)
    logger.info("running %d route(s): %s", len(manager.routes), [r.name for r in manager.routes])
    with live_view(manager, enabled=live):
        manager.run()
    logger.info("drained; exiting")


TargetArg = Annotated[
    str | None,
    typer.Argument(
        metavar="[MODULE:ATTR]",
        help="A Manager, a Route, a list of routes, or a callable (sync or async) "
        "returning one; the current directory is importable.",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="A loafer.toml config file instead of MODULE:ATTR."),
]


@dataclass(frozen=True)
class _RunOptions:
    """What ``loafer run`` passes on to a child it starts (a reloaded or worker process)."""

    target: str | None
    config_file: Path | None
    log_level: LogLevel
    log_format: LogFormat
    shutdown_timeout: float | None
    health_port: int | None
    health_host: str | None
    status_interval: float | None
    no_live: bool = False
    metrics_port: int | None = None
    tracing: bool | None = None

    def command(self) -> list[str]:
        """``loafer run`` with these options (no --reload, no --workers)."""
        args = ["run", "--log-level", self.log_level.value, "--log-format", self.log_format.value]
        if self.target is not None:
            args.append(self.target)
        for flag, value in (
            ("--config", self.config_file),
            ("--shutdown-timeout", self.shutdown_timeout),
            ("--health-port", self.health_port),
            ("--health-host", self.health_host),
            ("--status-interval", self.status_interval),
            ("--metrics-port", self.metrics_port),
        ):
            if value is not None:
                args += [flag, str(value)]
        if self.no_live:
            args.append("--no-live")
        if self.tracing is not None:
            args.append("--tracing" if self.tracing else "--no-tracing")
        return [sys.executable, "-c", "from loafer_cli.app import main; main()", *args]


def _reload(options: _RunOptions, reload_dirs: list[Path]) -> None:
    try:
        import watchfiles
    except ImportError:
        raise ConfigurationError(
            "--reload needs watchfiles: pip install 'loafer-core[reload]'"
        ) from None
    shutdown_timeout = options.shutdown_timeout
    if shutdown_timeout is None:
        shutdown_timeout = _configured_shutdown_timeout(options)
    command = options.command()
    dirs = [str(d) for d in reload_dirs] or [str(Path.cwd())]
    logger.info("watching %s for changes (restarting on change)", ", ".join(dirs))
    # a change (or SIGTERM to this process) sends SIGINT to the child: it drains, with
    # its shutdown timeout and a margin, before watchfiles kills it
    grace = math.ceil((30.0 if shutdown_timeout is None else shutdown_timeout) + 10)
    watchfiles.run_process(
        *dirs, target=shlex.join(command), target_type="command", sigint_timeout=grace
    )


def _configured_shutdown_timeout(options: _RunOptions) -> float | None:
    """A config file's ``[manager] shutdown_timeout`` (read, nothing built or imported),
    or None: for ``--reload``, whose child drains with it (a MODULE:ATTR target is not
    imported by the reloader, so its Manager's own value is not known here)."""
    try:
        path = _config_path(options.target, options.config_file)
        if path is None:
            return None
        return float(_config_module().load_config(path).manager.shutdown_timeout)
    except Exception:  # a broken config: the child says what is wrong
        return None


def _supervise(options: _RunOptions, workers: int) -> None:
    """``--workers N``: check the target builds, then run N workers under supervision;
    exit with what the supervisor says."""
    from loafer_cli.workers import supervise

    # a bad target fails once, here; the workers' drain time is their Manager's: the
    # option, else the target's own (a Manager's, a config file's [manager])
    manager = build_manager(
        options.target,
        options.config_file,
        shutdown_timeout=options.shutdown_timeout,
        tracing=options.tracing,
    )
    aggregating: Any = contextlib.nullcontext()
    if options.metrics_port is not None:  # the workers record, this process serves the sum
        from loafer_cli.metrics import aggregated_metrics

        aggregating = aggregated_metrics(options.metrics_port)
    with aggregating:
        code = supervise(options.command(), workers, shutdown_timeout=manager.shutdown_timeout)
    if code:
        raise typer.Exit(code)


def _console() -> Console:
    """Rich's console: the terminal's width, or wide lines when piped (no wrapping)."""
    return Console(width=None if sys.stdout.isatty() else 200)


# `loafer run`'s options (module level: the command's signature stays readable)
_LogLevelOpt = Annotated[LogLevel, typer.Option("--log-level", "-l", help="Lowest level logged.")]
_LogFormatOpt = Annotated[
    LogFormat,
    typer.Option("--log-format", help="plain lines, or JSON lines for log shippers."),
]
_ShutdownTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--shutdown-timeout",
        min=0,
        help="Seconds in-flight handlers get to finish at shutdown (default: the "
        "Manager's own, 30).",
        show_default=False,
    ),
]
_ReloadOpt = Annotated[
    bool,
    typer.Option("--reload", help="Restart on source changes (development; watchfiles)."),
]
_ReloadDirsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--reload-dir",
        help="Directory to watch with --reload (repeatable; default: the current directory).",
    ),
]
_WorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers",
        "-w",
        min=1,
        help="Processes, each running every route (the broker shares the work); the "
        "parent forwards signals and restarts a worker that dies.",
    ),
]
_HealthPortOpt = Annotated[
    int | None,
    typer.Option(
        "--health-port",
        min=0,
        max=65535,
        help="Serve /livez, /readyz and /status on this port (worker i of --workers: port + i).",
        show_default=False,
    ),
]
_HealthHostOpt = Annotated[
    str | None,
    typer.Option(
        "--health-host", help="Address of the health endpoints (0.0.0.0).", show_default=False
    ),
]
_StatusIntervalOpt = Annotated[
    float | None,
    typer.Option(
        "--status-interval",
        min=0.1,
        help="Log a status line per route every this many seconds.",
        show_default=False,
    ),
]
_NoLiveOpt = Annotated[
    bool,
    typer.Option("--no-live", help="No live table of the routes, even on a terminal."),
]
_MetricsPortOpt = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=0,
        max=65535,
        help="Serve Prometheus /metrics on this port (with --workers: every worker's "
        "numbers summed); needs loafer-core\\[prometheus].",
        show_default=False,
    ),
]
_TracingOpt = Annotated[
    bool | None,
    typer.Option(
        "--tracing/--no-tracing",
        # \\[ : a literal [ in rich's markup (else [otel] is taken for a style)
        help="OpenTelemetry consumer spans for every route (the tracing middleware, "
        "outermost), or none (default: the config file's \\[manager] tracing); needs "
        "loafer-core\\[otel].",
        show_default=False,
    ),
]


@app.command(
    help="Run routes until SIGINT/SIGTERM, then drain and exit 0 "
    "(78 on a configuration error, 1 on a crash)."
)
def run(
    target: TargetArg = None,
    config_file: ConfigOpt = None,
    log_level: _LogLevelOpt = LogLevel.info,
    log_format: _LogFormatOpt = LogFormat.plain,
    shutdown_timeout: _ShutdownTimeoutOpt = None,
    reload: _ReloadOpt = False,
    reload_dirs: _ReloadDirsOpt = None,
    workers: _WorkersOpt = 1,
    health_port: _HealthPortOpt = None,
    health_host: _HealthHostOpt = None,
    status_interval: _StatusIntervalOpt = None,
    no_live: _NoLiveOpt = False,
    metrics_port: _MetricsPortOpt = None,
    tracing: _TracingOpt = None,
) -> None:
    """Run routes until SIGINT/SIGTERM, then drain and exit 0."""
    from loafer_cli.live import wanted
    from loafer_cli.logs import configure_logging

    configure_logging(log_level.value, log_format.value)
    options = _RunOptions(
        target,
        config_file,
        log_level,
        log_format,
        shutdown_timeout,
        health_port,
        health_host,
        status_interval,
        no_live,
        metrics_port,
        tracing,
    )
    with _config_errors():
        if reload:
            _reload(options, reload_dirs or [])
            return
        if workers > 1:
            _supervise(options, workers)
            return
        worker = os.environ.get("LOAFER_WORKER")
        if health_port and worker is not None and worker.isdigit():
            health_port += int(worker)  # each worker of --workers its own port
        try:
            run_target(
                target,
                config_file,
                shutdown_timeout=shutdown_timeout,
                health_port=health_port,
                health_host=health_host,
                status_interval=status_interval,
                live=wanted(log_format=log_format.value, no_live=no_live),
                metrics_port=metrics_port,
                tracing=tracing,
            )
        except ConfigurationError:
            raise
        except Exception:
            logger.exception("loafer run crashed")
            raise typer.Exit(1) from None


@app.command(
    help="Start every route's provider (connect, check the queue) and check its "
    "capabilities, consuming nothing; exit 1 on any problem."
)
def check(
    target: TargetArg = None,
    config_file: ConfigOpt = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds each provider gets to start.")
    ] = 30.0,
) -> None:
    """Build every route, start its provider (connect, check the queue), check
    capabilities; consume nothing. Exit 1 if any route has a problem."""
    import asyncio

    from loafer_cli.check import check_routes, results_table

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with _config_errors():
        routes = load_routes(target, config_file)
    results = asyncio.run(check_routes(routes, timeout))
    _console().print(results_table(results))
    failed = [r for r in results if not r.ok]
    for result in failed:
        _error(f"route {result.name!r}: {'; '.join(result.problems)}")
    if failed:
        raise typer.Exit(1)


@app.command(
    help="List the installed provider plugins: distribution, version, whether each "
    "loads (else what to install), capabilities with default options."
)
def providers() -> None:
    """List every installed provider plugin: distribution, version, whether it loads
    (else what to install), its capabilities with default options."""
    from loafer_cli.providers import print_providers

    print_providers(_console())


@app.command(
    help="Publish messages (BODY, or stdin line by line) and report each broker "
    "confirm; exit 1 if any publish failed."
)
def publish(
    provider: Annotated[str, typer.Argument(help="Publisher name: rabbit, amqp, sqs, sns, ...")],
    queue: Annotated[
        str,
        typer.Argument(
            help="Target: routing key (rabbit, default exchange: the queue name), address "
            "(amqp), queue (sqs), topic (sns)."
        ),
    ],
    body: Annotated[
        str | None,
        typer.Argument(help="The message; '-' or none: one message per line of stdin."),
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="Broker URL (sqs/sns: the endpoint URL).")
    ] = None,
    options: Annotated[
        list[str] | None,
        typer.Option(
            "--option", "-o", help="Publisher option key=value (JSON value, else a string)."
        ),
    ] = None,
    headers: Annotated[
        list[str] | None,
        typer.Option("--header", "-H", help="Message header key=value (repeatable)."),
    ] = None,
    delay: Annotated[
        float | None,
        typer.Option(
            "--delay",
            metavar="SECONDS",
            help="Deliver no earlier than SECONDS from now (see docs/scheduling.md).",
        ),
    ] = None,
) -> None:
    """Publish messages and report each broker confirm. Exit 1 if any publish failed."""
    import asyncio

    from loafer_cli.publish import (
        PublishResult,
        build_publisher,
        check_publish_delay,
        parse_pairs,
        publish_all,
    )

    with _config_errors():
        opts = parse_pairs(options or [], "--option")
        heads = parse_pairs(headers or [], "--header")
        publisher = build_publisher(provider, queue, url, opts)
        check_publish_delay(publisher, provider, delay)
    if body is None or body == "-":
        bodies: Any = (line.rstrip("\r\n") for line in sys.stdin if line.strip())
    else:
        bodies = [body]

    def report(result: PublishResult) -> None:
        if result.error is None:
            print(f"{result.index + 1}: confirmed", flush=True)
        else:
            print(f"{result.index + 1}: FAILED: {result.error}", flush=True)

    with _config_errors():
        confirmed, failed = asyncio.run(publish_all(publisher, bodies, heads, report, delay=delay))
    print(f"{confirmed} confirmed, {failed} failed")
    if failed:
        raise typer.Exit(1)


class DocumentFormat(StrEnum):
    """``loafer asyncapi`` output formats."""

    json = "json"
    yaml = "yaml"


@app.command(
    help="Write an AsyncAPI 3.0 document of the service (a channel and an operation per "
    "route and per publisher, the handlers' message schemas, the brokers' bindings); "
    "connects to nothing."
)
def asyncapi(
    target: TargetArg = None,
    config_file: ConfigOpt = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file (default: stdout)."),
    ] = None,
    fmt: Annotated[
        DocumentFormat,
        typer.Option("--format", "-f", help="json, or yaml (needs PyYAML)."),
    ] = DocumentFormat.json,
    title: Annotated[
        str | None,
        typer.Option(
            "--title",
            help="info.title (default: MODULE:ATTR, or the config file's directory name).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[str, typer.Option("--version", help="info.version.")] = "1.0.0",
) -> None:
    """Write the service's AsyncAPI 3.0 document (see docs/asyncapi.md)."""
    from loafer_cli.asyncapi import build_document, render

    with _config_errors():
        manager = build_manager(target, config_file)
        path = _config_path(target, config_file)
        # a config file: its directory's name (the project's), not a path of this machine
        shown = target or (path.resolve().parent.name if path else "") or "loafer service"
        document = build_document(
            manager,
            title=title or shown,
            version=version,
            warn=lambda message: print(f"loafer: warning: {message}", file=sys.stderr),
        )
        text = render(document, fmt.value)
        if output is not None:
            try:
                output.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(f"--output {output}: {exc.strerror or exc}") from None
    if output is None:
        sys.stdout.write(text)


class ScalerKind(StrEnum):
    """``loafer autoscale`` manifest kinds."""

    keda = "keda"
    hpa = "hpa"


@app.command(
    help="Write a KEDA ScaledObject (or an HPA) scaling the Deployment that runs the "
    "service on each route's backlog (loafer_queue_backlog); connects to nothing."
)
def autoscale(
    target: TargetArg = None,
    config_file: ConfigOpt = None,
    deployment: Annotated[
        str, typer.Option("--deployment", "-d", help="The Deployment running the service.")
    ] = "loafer",
    kind: Annotated[
        ScalerKind, typer.Option("--kind", help="keda (a ScaledObject) or hpa.")
    ] = ScalerKind.keda,
    per_replica: Annotated[
        int,
        typer.Option("--target", help="Messages waiting per replica, per route, to aim at."),
    ] = 100,
    min_replicas: Annotated[int, typer.Option("--min", help="Fewest replicas (KEDA: 0 ok).")] = 1,
    max_replicas: Annotated[int, typer.Option("--max", help="Most replicas.")] = 10,
    prometheus: Annotated[
        str, typer.Option("--prometheus", help="Prometheus's address, for KEDA.")
    ] = "http://prometheus.monitoring.svc:9090",
    namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
) -> None:
    """Write autoscaling manifests for the service (see docs/workers.md)."""
    from loafer_cli.asyncapi import render
    from loafer_cli.autoscale import build_manifests

    with _config_errors():
        manager = build_manager(target, config_file)
        try:
            manifests = build_manifests(
                manager,
                deployment=deployment,
                kind=kind.value,
                target=per_replica,
                min_replicas=min_replicas,
                max_replicas=max_replicas,
                prometheus=prometheus,
                namespace=namespace,
            )
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        try:
            text = "---\n".join(render(m, "yaml") for m in manifests)
        except ConfigurationError:  # no PyYAML: kubectl reads JSON as well
            text = "".join(render(m, "json") for m in manifests)
    sys.stdout.write(text)


def _add_postgres() -> None:
    from loafer_cli.postgres import postgres_app

    app.add_typer(postgres_app, name="postgres")


_add_postgres()


def _add_dlq() -> None:
    from loafer_cli.dlq import build_dlq_app

    app.add_typer(build_dlq_app(load_routes, _config_errors), name="dlq")


_add_dlq()


@app.callback()
def _root() -> None:
    """loafer-core's command line."""


def main() -> None:
    """Console-script entry point."""
    app()
