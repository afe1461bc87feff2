"""nox sessions: tests (core alone, then each plugin), lint, typecheck, docs, benchmarks.

nox -s tests_core          # core only, installed with no plugin extras (isolation)
nox -s tests_rabbit tests_amqp tests_sqs tests_nats tests_redis tests_postgres tests_kafka
nox -s lint typecheck docs
nox -s bench -- core       # or rabbit, amqp, sqs, nats, redis, postgres; extra args: the script
nox -s tests_latest        # the whole suite on the newest releases (the lock ignored)
nox -s tests_sentry        # the Sentry handler on sentry-sdk 2.x and 3.x

Every session but tests_latest installs the versions uv.lock pins (uv sync --frozen, or
pip with requirements/constraints.txt without uv); see docs/dependencies.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests_core", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True
# uv creates and fills the sessions' environments in seconds; virtualenv + pip without it
nox.options.default_venv_backend = "uv|virtualenv"

PLUGINS = ("rabbit", "amqp", "sqs", "nats", "redis", "postgres", "pubsub", "kafka")
CONSTRAINTS = "requirements/constraints.txt"


def _uv() -> str | None:
    local = Path(".tools/uv/bin/uv")  # what scripts/test.sh installs
    return shutil.which("uv") or (str(local) if local.exists() else None)


def _locked(session: nox.Session, *extras: str, editable: bool = True) -> None:
    """The project with ``extras``, every package at the version uv.lock pins."""
    uv = _uv()
    if uv is not None:
        location = session.virtualenv.location
        args = ["sync", "--frozen", *(f"--extra={e}" for e in extras)]
        if not editable:
            args.append("--no-editable")
        session.run_install(uv, *args, env={"UV_PROJECT_ENVIRONMENT": location}, external=True)
        return
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install("-c", CONSTRAINTS, "-e", spec)


@nox.session(python="3.11")
def tests_core(session: nox.Session) -> None:
    """Core tests with no broker library installed: proves core never needs one."""
    _locked(session, "test", "sentry")
    session.run(
        "python",
        "-c",
        "import importlib.util as u, sys; "
        # redis-py is not among them: loafer_core.ext.redis_store (the idempotency store)
        # is core's, and the test extra installs it for its tests against a real Redis
        "libs = ('aio_pika', 'proton', 'aiobotocore', 'nats', 'asyncpg', 'aiokafka', 'gcloud'); "
        "bad = [m for m in libs if u.find_spec(m)]; "
        "sys.exit(f'broker libraries installed: {bad}' if bad else 0)",
    )
    session.run("pytest", "tests/loafer_core", *session.posargs)


# the AMQP 1.0 tests and benchmark watch the broker over AMQP 0-9-1 (aio-pika)
EXTRAS = {"amqp": "amqp,rabbit", "sqs": "sqs", "rabbit": "rabbit", "nats": "nats", "redis": "redis"}
EXTRAS["postgres"] = "postgres"


def _plugin_tests(session: nox.Session, plugin: str) -> None:
    _locked(session, *EXTRAS[plugin].split(","), "test")
    session.run("bash", "scripts/brokers.sh", external=True)
    # broker restarts (`slow`) disturb other users of the broker: opt in with `-- -m slow`
    args = session.posargs or ["-m", "not slow"]
    session.run("pytest", f"tests/loafer_{plugin}", *args)


@nox.session(python="3.11")
def tests_rabbit(session: nox.Session) -> None:
    """RabbitMQ plugin against the real broker."""
    _plugin_tests(session, "rabbit")


@nox.session(python="3.11")
def tests_amqp(session: nox.Session) -> None:
    """AMQP 1.0 plugin against RabbitMQ's AMQP 1.0 plugin."""
    _plugin_tests(session, "amqp")


@nox.session(python="3.11")
def tests_sqs(session: nox.Session) -> None:
    """SQS plugin against moto's server."""
    _plugin_tests(session, "sqs")


@nox.session(python="3.11")
def tests_nats(session: nox.Session) -> None:
    """NATS JetStream plugin against a real nats-server (-js)."""
    _plugin_tests(session, "nats")


@nox.session(python="3.11")
def tests_redis(session: nox.Session) -> None:
    """Redis Streams plugin against the real Redis (or Valkey)."""
    _plugin_tests(session, "redis")


@nox.session(python="3.11")
def tests_postgres(session: nox.Session) -> None:
    """PostgreSQL queue plugin against the real server (tests/loafer_postgres)."""
    _plugin_tests(session, "postgres")


@nox.session(python="3.11")
def tests_kafka(session: nox.Session) -> None:
    """Kafka plugin against Tansu, a Kafka-protocol broker (scripts/brokers.sh starts it)."""
    _plugin_tests(session, "kafka")


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    _locked(session, "lint")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/; tests/ checked, not strict (pyproject.toml's tests.* overrides)."""
    _locked(session, "all", "test", "lint")
    session.run("mypy", "--strict", "src")
    session.run("mypy", "tests")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The docs site, built with --strict (a broken link, a missing API reference, a page
    left out of the navigation fail), and every Python block run or type-checked."""
    _locked(session, "all", "docs", "test", "lint")
    session.run("python", "scripts/check_docs.py", "--blocks")
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks: `nox -s bench -- core` (or instructions, rabbit, amqp, sqs, nats, redis,
    batches, postgres, outbox, pubsub, kafka)."""
    which = session.posargs[0] if session.posargs else "core"
    # the SQS benchmark runs moto's server; the AMQP one declares its queue with aio-pika
    extras = {
        "core": "",
        "instructions": "",
        "sqs": "sqs,test",
        "amqp": "amqp,rabbit",
        "batches": "rabbit,redis",
        "outbox": "postgres,rabbit",  # the relay vs raw asyncpg + aio-pika
    }
    extra = extras.get(which, which)
    _locked(session, *filter(None, extra.split(",")))
    session.run("bash", "scripts/brokers.sh", external=True)
    session.run("python", f"benchmarks/bench_{which}.py", *session.posargs[1:])


@nox.session(python="3.11")
def tests_latest(session: nox.Session) -> None:
    """The whole suite on the newest releases every range in pyproject.toml allows, the
    lock ignored: what `uv lock --upgrade` would bring. Run it on purpose (weekly, before
    a lock update); its failures are the next release's breakages, found first."""
    spec = ".[all,test,lint,docs]"
    uv = _uv()
    if uv is not None:  # uv resolves this in seconds; pip backtracks into ancient releases
        python = f"{session.virtualenv.location}/bin/python"
        session.run_install(
            uv, "pip", "install", "--python", python, "--upgrade", "-e", spec, external=True
        )
    else:
        session.install("--upgrade", "-e", spec)
    # what was resolved, for the report: compare with uv.lock
    session.run(
        "python",
        "-c",
        "import importlib.metadata as m; "
        "print(*sorted(f'{d.name}=={d.version}' for d in m.distributions()), sep='\\n')",
    )
    session.run("bash", "scripts/brokers.sh", external=True)
    session.run("pytest", "-n", "3", *session.posargs)


@nox.session(python="3.11")
@nox.parametrize("sdk", ["2", "3"])
def tests_sentry(session: nox.Session, sdk: str) -> None:
    """loafer_core.ext.sentry on sentry-sdk 2.x and 3.x (the extra allows both)."""
    _locked(session, "test", "sentry")
    session.install(f"sentry-sdk>={sdk},<{int(sdk) + 1}")
    session.run("pytest", "tests/loafer_core/test_sentry.py", *session.posargs)
