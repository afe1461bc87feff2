"""nox sessions: tests (core alone, then each plugin), lint, typecheck, docs, benchmarks.

nox -s tests_core          # core only, installed with no plugin extras (isolation)
nox -s tests_rabbit tests_amqp tests_sqs tests_nats tests_redis
nox -s lint typecheck docs
nox -s bench -- core       # or rabbit, amqp, sqs, nats, redis; extra args go to the script
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests_core", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True
# uv creates and fills the sessions' environments in seconds; virtualenv + pip without it
nox.options.default_venv_backend = "uv|virtualenv"

PLUGINS = ("rabbit", "amqp", "sqs", "nats", "redis")


@nox.session(python="3.11")
def tests_core(session: nox.Session) -> None:
    """Core tests with no broker library installed: proves core never needs one."""
    session.install("-e", ".[test,sentry]")
    session.run(
        "python",
        "-c",
        "import importlib.util as u, sys; "
        "libs = ('aio_pika', 'proton', 'aiobotocore', 'nats', 'redis'); "
        "bad = [m for m in libs if u.find_spec(m)]; "
        "sys.exit(f'broker libraries installed: {bad}' if bad else 0)",
    )
    session.run("pytest", "tests/loafer_core", *session.posargs)


# the AMQP 1.0 tests and benchmark watch the broker over AMQP 0-9-1 (aio-pika)
EXTRAS = {"amqp": "amqp,rabbit", "sqs": "sqs", "rabbit": "rabbit", "nats": "nats", "redis": "redis"}


def _plugin_tests(session: nox.Session, plugin: str) -> None:
    session.install("-e", f".[{EXTRAS[plugin]},test]")
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
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/."""
    session.install("-e", ".[all,test]", "mypy>=1.11")
    session.run("mypy", "--strict", "src")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The docs site, built with --strict (a broken link, a missing API reference, a page
    left out of the navigation fail), and every Python block run or type-checked."""
    session.install("-e", ".[all,docs,test]", "mypy>=1.11")
    session.run("python", "scripts/check_docs.py", "--blocks")
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks: `nox -s bench -- core` (or instructions, rabbit, amqp, sqs, nats, redis)."""
    which = session.posargs[0] if session.posargs else "core"
    # the SQS benchmark runs moto's server; the AMQP one declares its queue with aio-pika
    extras = {"core": "", "instructions": "", "sqs": "[sqs,test]", "amqp": "[amqp,rabbit]"}
    extra = extras.get(which, f"[{which}]")
    session.install("-e", f".{extra}")
    session.run("bash", "scripts/brokers.sh", external=True)
    session.run("python", f"benchmarks/bench_{which}.py", *session.posargs[1:])
