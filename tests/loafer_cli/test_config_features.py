"""The config file's publishers (``[publishers.NAME]``, ``publish_to``), middleware,
tracing and idempotency: built from ``loafer.toml``, their errors, a real forward to
RabbitMQ through ``loafer run --config``, and ``loafer asyncapi --config``.

Building connects to nothing: the publishers' URLs below point at closed ports unless a
test runs them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sys
import textwrap
import uuid
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from referencing import Registry
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT7

from loafer_amqp.publisher import AMQPPublisher
from loafer_cli import app as cli_app
from loafer_cli.asyncapi import build_document
from loafer_cli.config import build_manager, build_routes, load_config
from loafer_core.errors import ConfigurationError
from loafer_core.ext.otel import Tracing
from loafer_core.ext.redis_store import RedisStore
from loafer_core.idempotency import Idempotency, MemoryStore, body_hash
from loafer_core.outcome import Outcome
from loafer_core.provider import Delivery
from loafer_core.route import Route
from loafer_core.testing import run_until_idle
from loafer_nats.publisher import NATSPublisher
from loafer_rabbit import RabbitPublisher
from loafer_sqs.publisher import SNSPublisher, SQSPublisher
from tests.loafer_cli import config_app
from tests.loafer_cli.runner import Service, loafer
from tests.loafer_rabbit.conftest import RabbitAdmin

HERE = "tests.loafer_cli.test_config_features"
APP = "tests.loafer_cli.config_app"
CLOSED = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens there
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sys, "path", list(sys.path))  # build_routes adds the file's directory
    config_app.HANDLED.clear()
    config_app.SEEN = None
    CALLS.clear()
    yield
    config_app.SEEN = None


def write(directory: Path, text: str, name: str = "loafer.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problem(directory: Path, text: str, environ: dict[str, str] | None = None) -> str:
    """The error a config file gives when loaded and its manager built."""
    path = write(directory, text)
    with pytest.raises(ConfigurationError) as caught:
        build_manager(load_config(path, environ or {}))
    return str(caught.value).replace(str(path), "loafer.toml")


# -- middleware the files below name ---------------------------------------------------------

CALLS: list[str] = []


async def outer(delivery: Delivery, route: Route, call_next: Any) -> Outcome:
    """A middleware (three arguments): records that it ran."""
    CALLS.append("outer")
    outcome: Outcome = await call_next(delivery)
    return outcome


def inner_factory() -> Any:
    """A factory (no arguments): returns the middleware."""

    async def inner(delivery: Delivery, route: Route, call_next: Any) -> Outcome:
        CALLS.append(f"inner:{route.name}")
        outcome: Outcome = await call_next(delivery)
        return outcome

    return inner


class Counting:
    """A middleware class: instantiated with no arguments, the instance is the middleware."""

    async def __call__(self, delivery: Delivery, route: Route, call_next: Any) -> Outcome:
        CALLS.append("counting")
        outcome: Outcome = await call_next(delivery)
        return outcome


def returns_none() -> None:
    """A factory that forgot to return its middleware."""


def two_arguments(delivery: Delivery, route: Route) -> None:
    """Neither a middleware nor a factory."""


NOT_CALLABLE = 42


# -- publishers and publish_to ---------------------------------------------------------------

PUBLISHERS = f"""
[publishers.fulfilment]
publisher = "rabbit"
target = "fulfilment"
url = "${{RABBIT_URL}}"
options = {{ persistent = false, exchange = "shop", timeout = "${{TIMEOUT:-5}}" }}

[publishers.audit]
publisher = "amqp"
target = "/queues/audit"
url = "amqp://127.0.0.1:1"
options = {{ user = "guest", password = "${{AMQP_PASSWORD}}" }}

[publishers.billing]
publisher = "sqs"
target = "billing"
url = "http://127.0.0.1:1"  # SQS: the endpoint URL
options = {{ region_name = "eu-west-1" }}

[publishers.events]
publisher = "sns"
target = "arn:aws:sns:eu-west-1:123456789012:events"
options = {{ region_name = "eu-west-1" }}

[publishers.stream]
publisher = "nats"
target = "orders.created"
url = "nats://127.0.0.1:1"

[[routes]]
name = "orders"
provider = "memory"
queue = "orders"
handler = "{APP}:handle"
publish_to = "fulfilment"

[[routes]]
name = "everywhere"
provider = "memory"
queue = "everywhere"
handler = "{APP}:handle"
publish_to = ["fulfilment", "audit", "billing", "events", "stream"]
"""

ENV = {"RABBIT_URL": CLOSED, "AMQP_PASSWORD": "pub-5ecret"}


def test_publishers_are_built_and_wired_by_name_without_connecting(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, PUBLISHERS), ENV)
    orders, everywhere = build_routes(config)

    assert orders.publish_to is not None and everywhere.publish_to is not None
    (fulfilment,) = orders.publish_to.publishers.values()
    assert list(orders.publish_to.publishers) == ["fulfilment"]  # the table's name
    assert isinstance(fulfilment, RabbitPublisher)
    assert fulfilment.exchange == "shop" and fulfilment.routing_key == "fulfilment"
    assert fulfilment.persistent is False and fulfilment.timeout == 5  # "5" from ${TIMEOUT}

    targets = everywhere.publish_to.publishers
    assert list(targets) == ["fulfilment", "audit", "billing", "events", "stream"]
    assert targets["fulfilment"] is fulfilment  # one publisher per table, shared
    assert isinstance(targets["audit"], AMQPPublisher)
    assert isinstance(targets["billing"], SQSPublisher)
    assert isinstance(targets["events"], SNSPublisher)
    assert isinstance(targets["stream"], NATSPublisher)
    assert "pub-5ecret" not in repr(targets["audit"])

    # the manager opens (and later closes) each distinct publisher once
    manager = build_manager(load_config(write(tmp_path, PUBLISHERS), ENV))
    assert manager.routes[0].publish_to is not None
    assert len({id(p) for r in manager.routes for p in r.publish_to.publishers.values()}) == 5


# (case, config file, expected message with the file shown as loafer.toml)
BAD = [
    (
        "a route names an undeclared publisher",
        PUBLISHERS.replace('publish_to = "fulfilment"', 'publish_to = "fulfilmnet"'),
        "loafer.toml: routes[0] ('orders'): publish_to: no publisher named 'fulfilmnet' "
        "(did you mean 'fulfilment'?); declared: audit, billing, events, fulfilment, stream "
        "(each a [publishers.NAME] table)",
    ),
    (
        "a route names a publisher and none is declared",
        f'[[routes]]\nprovider = "memory"\nqueue = "q"\nhandler = "{APP}:handle"\n'
        'publish_to = ["audit"]\n',
        "loafer.toml: routes[0]: publish_to: no publisher named 'audit': this file declares "
        "none (add a [publishers.audit] table)",
    ),
    (
        "publish_to neither a name nor names",
        PUBLISHERS.replace('publish_to = "fulfilment"', "publish_to = 3"),
        "loafer.toml: routes[0] ('orders'): publish_to: expected a publisher's name or an "
        "array of names (of [publishers.NAME] tables), got 3",
    ),
    (
        "publish_to empty",
        PUBLISHERS.replace('publish_to = "fulfilment"', "publish_to = []"),
        "loafer.toml: routes[0] ('orders'): publish_to: expected a publisher's name or an "
        "array of names (of [publishers.NAME] tables), got an array",
    ),
    (
        "an unknown publisher plugin",
        PUBLISHERS.replace('publisher = "nats"', 'publisher = "zeromq"'),
        "loafer.toml: publishers.stream.publisher: no publisher named 'zeromq' in the "
        "'loafer.publishers' entry point group; installed: "
        + ", ".join(sorted({ep.name for ep in entry_points(group="loafer.publishers")})),
    ),
    (
        "an option the publisher does not take",
        PUBLISHERS.replace("persistent = false", "persistant = false"),
        "loafer.toml: publishers.fulfilment.options.persistant: unknown option of 'rabbit' "
        "(RabbitPublisher) (did you mean 'persistent'?); it takes: close_timeout, "
        "connect_timeout, connection_name, connection_options, exchange, "
        "mandatory, persistent, pipeline, ssl_context, timeout, type_header",
    ),
    (
        "an option of the wrong type",
        PUBLISHERS.replace("persistent = false", 'persistent = "no"'),
        "loafer.toml: publishers.fulfilment.options.persistent: expected bool, got 'no'",
    ),
    (
        "the target given again as an option",
        PUBLISHERS.replace("persistent = false", 'routing_key = "x"'),
        "loafer.toml: publishers.fulfilment.options.routing_key: give it as the publisher's "
        "'target' key, not in options",
    ),
    (
        "an AMQP 1.0 publisher without its url",
        PUBLISHERS.replace('url = "amqp://127.0.0.1:1"\n', ""),
        "loafer.toml: publishers.audit.url: required by 'amqp' (AMQPPublisher) (its broker's URL)",
    ),
    (
        "a publisher without a target",
        PUBLISHERS.replace('target = "orders.created"\n', ""),
        "loafer.toml: publishers.stream.target: required key missing (expected a non-empty "
        "string (the routing key, address, queue, topic or subject))",
    ),
    (
        "an unknown key in a publisher's table",
        PUBLISHERS.replace('target = "orders.created"', 'target = "orders.created"\nurls = ""'),
        "loafer.toml: publishers.stream.urls: unknown key (did you mean 'url'?); allowed: "
        "options, publisher, target, url",
    ),
    (
        "the publisher refuses a value",
        PUBLISHERS.replace('url = "nats://127.0.0.1:1"', 'url = "http://127.0.0.1:1"'),
        "loafer.toml: publishers.stream: NATSPublisher(url=...): expected a nats://, tls://, "
        "ws:// or wss:// URL, got http://127.0.0.1:1",
    ),
    (
        "a route middleware that is not an import path",
        PUBLISHERS + 'middleware = ["outer"]\n',
        "loafer.toml: routes[1] ('everywhere'): middleware[0]: expected an array of import "
        "paths 'module:attribute', got 'outer'",
    ),
    (
        "a route middleware that cannot be imported",
        PUBLISHERS + f'middleware = ["{HERE}:outer", "{HERE}:outter"]\n',
        f"loafer.toml: routes[1] ('everywhere'): middleware[1]: cannot import '{HERE}:outter': "
        f"'{HERE}' has no attribute 'outter'",
    ),
    (
        "a manager middleware whose module is missing",
        '[manager]\nmiddleware = ["nowhere.mw:timed"]\n'
        f'[[routes]]\nprovider = "memory"\nqueue = "q"\nhandler = "{APP}:handle"\n',
        "loafer.toml: manager.middleware[0]: cannot import 'nowhere.mw:timed': no module "
        "named 'nowhere' (is it installed, or in the directory you run from?)",
    ),
    (
        "a middleware that is neither a middleware nor a factory",
        PUBLISHERS + f'middleware = ["{HERE}:two_arguments"]\n',
        f"loafer.toml: routes[1] ('everywhere'): middleware[0]: '{HERE}:two_arguments' cannot "
        "be called with (delivery, route, call_next) nor with no arguments; a middleware is "
        "an async callable (delivery, route, call_next) -> Outcome, or a factory taking no "
        "arguments that returns one",
    ),
    (
        "a factory returning None",
        PUBLISHERS + f'middleware = ["{HERE}:returns_none"]\n',
        f"loafer.toml: routes[1] ('everywhere'): middleware[0]: '{HERE}:returns_none' takes no "
        "arguments, so it is called as a factory, but it returned None, not a middleware; "
        "a middleware is an async callable (delivery, route, call_next) -> Outcome",
    ),
    (
        "a middleware that is not callable",
        '[manager]\nmiddleware = ["' + HERE + ':NOT_CALLABLE"]\n'
        f'[[routes]]\nprovider = "memory"\nqueue = "q"\nhandler = "{APP}:handle"\n',
        f"loafer.toml: manager.middleware[0]: '{HERE}:NOT_CALLABLE' is a int, not callable; "
        "a middleware is an async callable (delivery, route, call_next) -> Outcome",
    ),
    (
        "tracing not a boolean",
        '[manager]\ntracing = "sometimes"\n'
        f'[[routes]]\nprovider = "memory"\nqueue = "q"\nhandler = "{APP}:handle"\n',
        "loafer.toml: manager.tracing: expected true or false, got 'sometimes'",
    ),
    (
        "an idempotency store that is neither memory nor Redis",
        f'[[routes]]\nprovider = "memory"\nqueue = "q"\nhandler = "{APP}:handle"\n'
        '[routes.idempotency]\nstore = "postgres://db/keys"\n',
        "loafer.toml: routes[0]: idempotency.store: expected 'memory' or a Redis URL "
        "('redis://host:6379/0'), got 'postgres://db/keys'",
    ),
    (
        "an idempotency ttl of zero",
        f'[[routes]]\nprovider = "memory"\nqueue = "q"\nhandler = "{APP}:handle"\n'
        '[routes.idempotency]\nkey = "order-id"\nttl = 0\n',
        "loafer.toml: routes[0]: idempotency.ttl: expected seconds > 0, got 0",
    ),
    (
        "an unknown idempotency key",
        f'[[routes]]\nprovider = "memory"\nqueue = "q"\nhandler = "{APP}:handle"\n'
        '[routes.idempotency]\nheader = "order-id"\n',
        "loafer.toml: routes[0]: idempotency.header: unknown key; allowed: key, lock_ttl, "
        "namespace, store, ttl",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_each_mistake_gets_a_message_naming_the_key_and_what_to_fix(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert problem(tmp_path, text, ENV) == expected


def test_a_broken_publisher_is_reported_once_not_again_by_the_routes_naming_it(
    tmp_path: Path,
) -> None:
    text = PUBLISHERS.replace('publisher = "rabbit"', 'publisher = "rabit"')
    lines = problem(tmp_path, text, ENV).splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("loafer.toml: publishers.fulfilment.publisher: no publisher")


def test_a_secret_from_the_environment_is_not_shown_in_a_publisher_error(
    tmp_path: Path,
) -> None:
    text = PUBLISHERS.replace('timeout = "${TIMEOUT:-5}"', 'pipeline = "${PIPELINE}"')
    message = problem(tmp_path, text, {**ENV, "PIPELINE": "s3cret-value"})
    assert message == (
        "loafer.toml: publishers.fulfilment.options.pipeline: expected int, got the value "
        "of an environment variable (not shown)"
    )
    message = problem(tmp_path, PUBLISHERS, {"AMQP_PASSWORD": "x"})
    assert message == (
        "loafer.toml: publishers.fulfilment.url: environment variable RABBIT_URL is not set "
        "(set it, or give a default: ${RABBIT_URL:-default})"
    )


THIRD_PARTY = """
class TopicPublisher:
    \"\"\"A third party's publisher: its target is its first parameter.\"\"\"

    def __init__(self, topic: str, *, url: str = "x://", colour: str = "blue", size: int = 1):
        self.topic, self.url, self.colour, self.size = topic, url, colour, size

    async def publish(self, body, *, headers=None, **options):
        pass
"""


def test_a_third_party_publisher_works_by_its_entry_point_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    (site / "thirdparty_publisher").mkdir(parents=True)
    (site / "thirdparty_publisher" / "__init__.py").write_text(THIRD_PARTY, encoding="utf-8")
    dist = site / "thirdparty_publisher-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: thirdparty-publisher\nVersion: 1.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        "[loafer.publishers]\ntopics = thirdparty_publisher:TopicPublisher\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(site))
    text = f"""
    [publishers.news]
    publisher = "topics"
    target = "news"
    url = "x://broker"
    options = {{ colour = "red", size = "${{SIZE}}" }}

    [[routes]]
    provider = "memory"
    queue = "q"
    handler = "{APP}:handle"
    publish_to = "news"
    """
    (built,) = build_routes(load_config(write(tmp_path, text), {"SIZE": "3"}))
    assert built.publish_to is not None
    publisher = built.publish_to.publishers["news"]
    assert type(publisher).__name__ == "TopicPublisher"
    assert (publisher.topic, publisher.url, publisher.colour, publisher.size) == (  # type: ignore[attr-defined]
        "news",
        "x://broker",
        "red",
        3,
    )
    assert problem(tmp_path, text.replace("colour", "color"), {"SIZE": "3"}) == (
        "loafer.toml: publishers.news.options.color: unknown option of 'topics' "
        "(TopicPublisher) (did you mean 'colour'?); it takes: colour, size"
    )


def test_in_pyproject_the_keys_are_named_under_tool_loafer(tmp_path: Path) -> None:
    text = f"""
    [tool.loafer.publishers.out]
    publisher = "rabbit"
    target = "out"
    url = "{CLOSED}"
    options = {{ persistant = true }}

    [[tool.loafer.routes]]
    name = "jobs"
    provider = "memory"
    queue = "q"
    handler = "{APP}:handle"
    publish_to = "out"
    middleware = ["{HERE}:outer"]
    """
    path = write(tmp_path, text, "pyproject.toml")
    with pytest.raises(ConfigurationError) as caught:
        build_routes(load_config(path, {}))
    message = str(caught.value).replace(str(path), "pyproject.toml")
    assert message.startswith(
        "pyproject.toml: tool.loafer.publishers.out.options.persistant: unknown option of "
        "'rabbit' (RabbitPublisher) (did you mean 'persistent'?)"
    )
    (route,) = build_routes(
        load_config(write(tmp_path, text.replace("persistant", "persistent"), "pyproject.toml"), {})
    )
    assert route.publish_to is not None and route.middleware == [outer]


# -- middleware ------------------------------------------------------------------------------

MIDDLEWARE = f"""
[manager]
middleware = ["{HERE}:outer", "{HERE}:Counting"]

[[routes]]
name = "jobs"
provider = "memory"
queue = "jobs"
handler = "{APP}:handle"
middleware = ["{HERE}:inner_factory"]
publish = ["a", "b"]
"""


async def test_manager_and_route_middleware_run_in_order_around_each_delivery(
    tmp_path: Path,
) -> None:
    manager = build_manager(load_config(write(tmp_path, MIDDLEWARE), {}))
    assert manager.middleware[0] is outer
    assert isinstance(manager.middleware[1], Counting)
    (route,) = manager.routes
    assert route.middleware[0].__name__ == "inner"  # the factory's product
    config_app.SEEN = asyncio.Queue()
    async with asyncio.timeout(20):
        async with manager:
            await manager.wait_started()
            seen = {await config_app.SEEN.get(), await config_app.SEEN.get()}
    assert seen == {"a", "b"}
    # the manager's wrap the route's; the first of a list is the outermost
    assert CALLS == ["outer", "counting", "inner:jobs"] * 2


# -- tracing ---------------------------------------------------------------------------------

TRACED = f"""
[manager]
tracing = true
middleware = ["{HERE}:outer"]

[[routes]]
name = "jobs"
provider = "memory"
queue = "jobs"
handler = "{APP}:handle"
publish = ["a"]
"""


async def test_tracing_true_installs_the_tracing_middleware_outermost(tmp_path: Path) -> None:
    manager = build_manager(load_config(write(tmp_path, TRACED), {}))
    assert isinstance(manager.middleware[0], Tracing)
    assert manager.middleware[1] is outer
    # and a delivery runs through it (OpenTelemetry's API without an SDK: no-op spans)
    config_app.SEEN = asyncio.Queue()
    async with asyncio.timeout(20):
        async with manager:
            await manager.wait_started()
            assert await config_app.SEEN.get() == "a"
    assert CALLS == ["outer"]
    untraced = build_manager(load_config(write(tmp_path, TRACED.replace("true", "false")), {}))
    assert not any(isinstance(m, Tracing) for m in untraced.middleware)


def test_tracing_without_the_otel_extra_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import opentelemetry fails
    assert problem(tmp_path, TRACED) == (
        "loafer.toml: manager.tracing: needs OpenTelemetry (opentelemetry-api), which is not "
        "installed: pip install 'loafer-core[otel]' (or set tracing = false)"
    )


def test_the_managers_problems_are_listed_with_the_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    text = TRACED.replace(f'"{HERE}:outer"', '"nowhere:mw"').replace(
        f'"{APP}:handle"', f'"{APP}:handel"'
    )
    assert problem(tmp_path, text).splitlines() == [
        f"loafer.toml: routes[0] ('jobs'): handler: cannot import '{APP}:handel': '{APP}' has "
        "no attribute 'handel'",
        "loafer.toml: manager.tracing: needs OpenTelemetry (opentelemetry-api), which is not "
        "installed: pip install 'loafer-core[otel]' (or set tracing = false)",
        "loafer.toml: manager.middleware[0]: cannot import 'nowhere:mw': no module named "
        "'nowhere' (is it installed, or in the directory you run from?)",
    ]


def test_the_tracing_flag_wins_over_the_config(tmp_path: Path) -> None:
    path = write(tmp_path, TRACED)
    assert isinstance(cli_app.build_manager(None, path).middleware[0], Tracing)
    off = cli_app.build_manager(None, path, tracing=False)
    assert off.middleware == [outer]
    plain = write(tmp_path, TRACED.replace("tracing = true", "tracing = false"))
    on = cli_app.build_manager(None, plain, tracing=True)
    assert isinstance(on.middleware[0], Tracing) and on.middleware[1:] == [outer]
    # given both ways, it is installed once
    both = cli_app.build_manager(None, path, tracing=True)
    assert sum(isinstance(m, Tracing) for m in both.middleware) == 1
    # the workers of --workers / --reload get the flag too
    options = cli_app._RunOptions(
        None, path, cli_app.LogLevel.info, cli_app.LogFormat.plain, None, None, None, None
    )
    assert "--tracing" not in options.command() and "--no-tracing" not in options.command()
    assert "--tracing" in dataclasses.replace(options, tracing=True).command()
    assert "--no-tracing" in dataclasses.replace(options, tracing=False).command()


def test_the_tracing_flag_without_the_otel_extra_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, TRACED.replace("tracing = true", "tracing = false"))
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ConfigurationError) as caught:
        cli_app.build_manager(None, path, tracing=True)
    assert str(caught.value) == (
        "--tracing: needs OpenTelemetry (opentelemetry-api), which is not installed: "
        "pip install 'loafer-core[otel]' (or set tracing = false)"
    )


# -- idempotency -----------------------------------------------------------------------------

IDEMPOTENT = f"""
[[routes]]
name = "jobs"
provider = "memory"
queue = "jobs"
handler = "{APP}:handle"
middleware = ["{HERE}:outer"]
publish = ["same", "same", "other"]

[routes.idempotency]
key = "body"
ttl = 3600
lock_ttl = 30
"""


async def test_idempotency_by_body_skips_the_duplicate(tmp_path: Path) -> None:
    (route,) = build_routes(load_config(write(tmp_path, IDEMPOTENT), {}))
    idem = route.middleware[0]
    assert isinstance(idem, Idempotency)  # the route's first: outside its own middleware
    assert route.middleware[1] is outer
    assert idem.key is body_hash and isinstance(idem.store, MemoryStore)
    assert (idem.ttl, idem.lock_ttl) == (3600, 30)
    await run_until_idle(route, timeout=10)
    assert sorted(config_app.HANDLED) == ["other", "same"]
    assert idem.skipped == 1


def test_idempotency_by_header_with_a_redis_store_shared_by_routes(tmp_path: Path) -> None:
    text = f"""
    [[routes]]
    name = "a"
    provider = "memory"
    queue = "a"
    handler = "{APP}:handle"
    idempotency = {{ key = "order-id", store = "${{REDIS_URL}}" }}

    [[routes]]
    name = "b"
    provider = "memory"
    queue = "b"
    handler = "{APP}:handle"
    idempotency = {{ key = "order-id", store = "${{REDIS_URL}}", namespace = "orders" }}
    """
    config = load_config(write(tmp_path, text), {"REDIS_URL": "redis://:pw@127.0.0.1:1/0"})
    manager = build_manager(config)
    a, b = (route.middleware[0] for route in manager.routes)
    assert isinstance(a, Idempotency) and isinstance(b, Idempotency)
    assert isinstance(a.store, RedisStore) and a.store is b.store  # one per URL
    assert manager.services == [a.store]  # checked at start, closed after the drain
    assert b.namespace == "orders" and a.namespace is None
    assert a.key(Delivery(raw=b"", metadata={"headers": {"order-id": "7"}})) == "7"


def test_a_redis_store_without_the_redis_extra_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "redis" or m.startswith("redis.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)
    text = (
        f'[[routes]]\nname = "a"\nprovider = "memory"\nqueue = "q"\nhandler = "{APP}:handle"\n'
        '[routes.idempotency]\nstore = "redis://127.0.0.1:6379/0"\n'
    )
    assert problem(tmp_path, text) == (
        "loafer.toml: routes[0] ('a'): idempotency.store: a Redis store needs redis-py, which "
        "is not installed: pip install 'loafer-core[redis]' (or store = \"memory\")"
    )


@pytest.mark.redis
async def test_a_redis_store_skips_a_duplicate_across_two_runs(
    tmp_path: Path, redis_url: str
) -> None:
    """Two managers built from the same file (two processes, say) share the keys."""
    namespace = f"loafer-test-{uuid.uuid4().hex[:10]}"
    text = f"""
    [[routes]]
    name = "jobs"
    provider = "memory"
    queue = "jobs"
    handler = "{APP}:handle"
    publish = ["once"]
    idempotency = {{ key = "body", store = "${{REDIS_URL}}", namespace = "{namespace}" }}
    """
    path = write(tmp_path, text)
    stores: list[RedisStore] = []
    try:
        for _ in range(2):
            config = load_config(path, {"REDIS_URL": redis_url})
            (route,) = build_routes(config)
            stores += config.stores
            await run_until_idle(route, timeout=20)
        assert config_app.HANDLED == ["once"]  # the second run skipped it
        idem = route.middleware[0]
        assert isinstance(idem, Idempotency) and idem.skipped == 1
    finally:
        for store in stores:
            client = store._redis()
            keys = [key async for key in client.scan_iter(f"{store.prefix}{namespace}:*")]
            if keys:
                await client.delete(*keys)
            await store.close()


# -- a real run: memory -> RabbitMQ through `loafer run --config` ---------------------------

FORWARDER = """
from loafer_core.forward import Publish


async def forward(content, metadata):
    return Publish(content, headers={"via": "loafer"})
"""

FORWARD_CONFIG = """
[manager]
shutdown_timeout = 5

[publishers.out]
publisher = "rabbit"
target = "${OUT_QUEUE}"
url = "${RABBIT_URL}"

[[routes]]
name = "relay"
provider = "memory"
queue = "relay"
handler = "forwarder:forward"
publish = ["one", "two", "three"]
publish_to = "out"
"""


@pytest.mark.rabbit
async def test_run_forwards_a_memory_route_to_rabbitmq(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str
) -> None:
    out = await admin.declare()
    (tmp_path / "forwarder.py").write_text(FORWARDER, encoding="utf-8")
    write(tmp_path, FORWARD_CONFIG)
    service = Service(
        ["--config", "loafer.toml"],
        cwd=tmp_path,
        env={"OUT_QUEUE": out, "RABBIT_URL": rabbit_url},
    )
    try:
        service.wait_for("running 1 route(s)")
        await admin.wait_count(out, 3, timeout=30)  # confirmed by RabbitMQ, three of them
        assert service.stop() == 0, "\n".join(service.lines)
    finally:
        service.kill()
    messages = await admin.drain(out)
    assert sorted(m.body for m in messages) == [b"one", b"three", b"two"]
    assert all(m.headers.get("via") == "loafer" for m in messages)
    assert not [line for line in service.lines if "ERROR" in line or "Traceback" in line]


def test_a_wrong_publish_to_stops_loafer_run_with_78_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "forwarder.py").write_text(FORWARDER, encoding="utf-8")
    write(tmp_path, FORWARD_CONFIG.replace('publish_to = "out"', 'publish_to = "outt"'))
    done = loafer(
        "run", "--config", "loafer.toml", cwd=tmp_path, env={"OUT_QUEUE": "q", "RABBIT_URL": CLOSED}
    )
    assert done.returncode == 78
    assert done.stderr.strip() == (
        "loafer: error: loafer.toml: routes[0] ('relay'): publish_to: no publisher named "
        "'outt' (did you mean 'out'?); declared: out (each a [publishers.NAME] table)"
    )


def test_loafer_run_with_the_tracing_flag_runs_and_drains(tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(
        "import logging\n\n\nasync def handle(content, metadata):\n"
        "    logging.getLogger('jobs').info('handled %s', content)\n",
        encoding="utf-8",
    )
    write(
        tmp_path,
        '[[routes]]\nname = "jobs"\nprovider = "memory"\nqueue = "jobs"\n'
        'handler = "jobs:handle"\npublish = ["a"]\n',
    )
    service = Service(["--tracing", "--config", "loafer.toml"], cwd=tmp_path, env={})
    try:
        service.wait_for("handled a")
        assert service.stop() == 0, "\n".join(service.lines)
    finally:
        service.kill()


# -- loafer asyncapi --config ----------------------------------------------------------------


def _no_network(uri: str) -> Any:
    raise NoSuchResource(ref=uri)


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    path = ROOT / "tests" / "data" / "asyncapi" / "3.0.0.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    resource = DRAFT7.create_resource(schema)
    registry = Registry(retrieve=_no_network).with_resource(schema["$id"], resource).crawl()
    return Draft7Validator(schema, registry=registry)


def test_asyncapi_shows_the_configs_publishers_as_send_channels(
    tmp_path: Path, validator: Draft7Validator
) -> None:
    write(tmp_path, PUBLISHERS.replace("${RABBIT_URL}", "amqp://guest:doc-5ecret@127.0.0.1:1/"))
    done = loafer(
        "asyncapi", "--config", "loafer.toml", cwd=tmp_path, env={**ENV, "PYTHONPATH": str(ROOT)}
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]
    assert errors == []
    send = [op for op in doc["operations"].values() if op["action"] == "send"]
    addresses = {
        doc["channels"][op["channel"]["$ref"].removeprefix("#/channels/")]["address"] for op in send
    }
    assert addresses == {
        "fulfilment",
        "/queues/audit",
        "billing",
        "arn:aws:sns:eu-west-1:123456789012:events",
        "orders.created",  # the NATS publisher's subject
    }
    assert len(send) == 5
    assert "doc-5ecret" not in done.stdout and "pub-5ecret" not in done.stdout
    # the same document in-process
    config = load_config(tmp_path / "loafer.toml", ENV)
    in_process = build_document(build_manager(config), title=tmp_path.name)
    assert len([o for o in in_process["operations"].values() if o["action"] == "send"]) == 5


# -- the examples of docs/config.md ----------------------------------------------------------


def _examples() -> list[str]:
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    return re.findall(r"```toml\n(.*?)```", text, re.S)[1:]  # the first: test_config.py


def test_docs_have_the_feature_examples() -> None:
    assert len(_examples()) >= 4


@pytest.mark.parametrize("index", range(len(_examples())))
def test_each_documented_example_builds(
    tmp_path: Path, index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = _examples()[index]
    # the examples name a `myapp` package: give it the objects they import
    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "handlers.py").write_text(
        "async def handle_order(order, metadata):\n    return True\nforward_order = handle_order\n",
        encoding="utf-8",
    )
    (package / "middleware.py").write_text(
        "async def timed(delivery, route, call_next):\n    return await call_next(delivery)\n"
        "def audit_log():\n    return timed\n",
        encoding="utf-8",
    )
    for name in [m for m in sys.modules if m == "myapp" or m.startswith("myapp.")]:
        monkeypatch.delitem(sys.modules, name)
    env = {"RABBIT_PASSWORD": "pw", "AMQP_PASSWORD": "pw", "REDIS_URL": "redis://127.0.0.1:1/0"}
    manager = build_manager(load_config(write(tmp_path, example), env))
    assert manager.routes
