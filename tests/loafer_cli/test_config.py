"""Routes from a config file (loafer_cli.config): parsing, validation messages, ``${VAR}``
substitution, ``[tool.loafer]`` in pyproject.toml, and routes built for every broker.

``load_config`` and ``build_routes`` are plain functions, run here with no event loop:
the providers they build connect only in their async ``start()``, so every error below
is raised before anything connects (the rabbit and amqp URLs point at a closed port).
"""

from __future__ import annotations

import asyncio
import re
import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from stevedore.extension import ExtensionManager

from loafer_amqp.provider import AMQPProvider
from loafer_cli.config import build_manager, build_routes, find_config, load_config
from loafer_core.errors import ConfigurationError
from loafer_core.memory import MemoryProvider
from loafer_core.policy import RetryPolicy
from loafer_core.testing import run_until_idle
from loafer_rabbit.provider import RabbitProvider
from loafer_sqs.provider import SQSProvider
from tests.loafer_cli import config_app
from tests.loafer_rabbit.conftest import RabbitAdmin, unique

APP = "tests.loafer_cli.config_app"
HANDLER = f'handler = "{APP}:handle"'
CLOSED = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens there


@pytest.fixture(autouse=True)
def _fresh_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sys, "path", list(sys.path))  # build_routes adds the file's directory
    config_app.HANDLED.clear()
    config_app.SEEN = None
    yield
    config_app.SEEN = None


def write(directory: Path, text: str, name: str = "loafer.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problem(directory: Path, text: str, environ: dict[str, str] | None = None) -> str:
    """The error a config file gives when loaded and built."""
    path = write(directory, text)
    with pytest.raises(ConfigurationError) as caught:
        build_routes(load_config(path, environ or {}))
    return str(caught.value).replace(str(path), "loafer.toml")


def route(body: str, *, name: str | None = "orders", provider: str = "memory") -> str:
    named = f'name = "{name}"\n' if name else ""
    return f'[[routes]]\n{named}provider = "{provider}"\n{body}\n'


MEMORY = 'queue = "q"\n' + HANDLER

# (case, config file, expected message with the file shown as loafer.toml)
BAD_CONFIGS = [
    (
        "unknown route key",
        route(MEMORY + '\nhander = "x:y"'),
        "loafer.toml: routes[0] ('orders'): hander: unknown key (did you mean 'handler'?); "
        "allowed: error_handler, handler, handler_timeout, idempotency, max_attempts, "
        "max_concurrency, middleware, name, provider, provider_options, publish, publish_to, "
        "queue, retry, translator",
    ),
    (
        "a word for a number",
        route(MEMORY) + route(MEMORY + '\nmax_concurrency = "ten"', name="fast"),
        "loafer.toml: routes[1] ('fast'): max_concurrency: expected an integer >= 1, got 'ten'",
    ),
    (
        "a number out of range, unnamed route",
        route(MEMORY + "\nmax_concurrency = 0", name=None),
        "loafer.toml: routes[0]: max_concurrency: expected an integer >= 1, got 0",
    ),
    (
        "a boolean for a number",
        route(MEMORY + "\nmax_attempts = true"),
        "loafer.toml: routes[0] ('orders'): max_attempts: expected an integer >= 1, got true",
    ),
    (
        "negative timeout",
        route(MEMORY + "\nhandler_timeout = -1"),
        "loafer.toml: routes[0] ('orders'): handler_timeout: expected seconds > 0, got -1",
    ),
    (
        "handler missing",
        route('queue = "q"'),
        "loafer.toml: routes[0] ('orders'): handler: required key missing "
        "(expected an import path 'module:attribute')",
    ),
    (
        "handler not an import path",
        route('queue = "q"\nhandler = "handle"'),
        "loafer.toml: routes[0] ('orders'): handler: expected an import path "
        "'module:attribute', got 'handle'",
    ),
    (
        "unknown provider",
        route(MEMORY, provider="zeromq"),
        "loafer.toml: routes[0] ('orders'): provider: no provider named 'zeromq' in the "
        "'loafer.providers' entry point group; installed: "
        + ", ".join(sorted({ep.name for ep in entry_points(group="loafer.providers")})),
    ),
    (
        "handler module not importable",
        route('queue = "q"\nhandler = "nowhere.handlers:handle"'),
        "loafer.toml: routes[0] ('orders'): handler: cannot import 'nowhere.handlers:handle': "
        "no module named 'nowhere' (is it installed, or in the directory you run from?)",
    ),
    (
        "handler attribute missing",
        route(f'queue = "q"\nhandler = "{APP}:handel"'),
        f"loafer.toml: routes[0] ('orders'): handler: cannot import '{APP}:handel': "
        f"'{APP}' has no attribute 'handel'",
    ),
    (
        "handler class needing arguments",
        route(f'queue = "q"\nhandler = "{APP}:NeedsArguments"'),
        f"loafer.toml: routes[0] ('orders'): handler: '{APP}:NeedsArguments' is a class and "
        "cannot be created with no arguments (TypeError: NeedsArguments.__init__() missing 1 "
        "required positional argument: 'db'); name an instance instead",
    ),
    (
        "a handler Route refuses",
        route(f'queue = "q"\nhandler = "{APP}:takes_one"'),
        "loafer.toml: routes[0] ('orders'): Route(handler=...): takes_one must accept "
        "(content, metadata), but its signature is takes_one(content: 'Any') -> 'None'",
    ),
    (
        "error handler attribute missing",
        route(MEMORY + f'\nerror_handler = "{APP}:nope"'),
        f"loafer.toml: routes[0] ('orders'): error_handler: cannot import '{APP}:nope': "
        f"'{APP}' has no attribute 'nope'",
    ),
    (
        "translator of the wrong type",
        route(MEMORY + "\ntranslator = 5"),
        "loafer.toml: routes[0] ('orders'): translator: expected an import path "
        "'module:attribute' or false, got 5",
    ),
    (
        "unknown provider option",
        route(
            f'queue = "q"\n{HANDLER}\n[routes.provider_options]\nprefetch = 10', provider="rabbit"
        ),
        "loafer.toml: routes[0] ('orders'): provider_options.prefetch: unknown option of "
        "'rabbit' (RabbitProvider) (did you mean 'prefetch_headroom'?); it takes: "
        "close_timeout, connect_timeout, connection_name, connection_options, "
        "dead_letter, dead_letter_exchange, dead_letter_queue, declare, "
        "delayed_retry, durable, poll_timeout, prefetch_headroom, publish_timeout, "
        "queue_arguments, queue_type, reconnect_interval, retry_queue, retry_tiers, "
        "ssl_context, url",
    ),
    (
        "provider option of the wrong type",
        route(
            f'queue = "q"\n{HANDLER}\n[routes.provider_options]\ndeclare = "yes"', provider="rabbit"
        ),
        "loafer.toml: routes[0] ('orders'): provider_options.declare: expected bool, got 'yes'",
    ),
    (
        "provider option not among its values",
        route(
            f'queue = "q"\n{HANDLER}\n[routes.provider_options]\nqueue_type = "lazy"',
            provider="rabbit",
        ),
        "loafer.toml: routes[0] ('orders'): provider_options.queue_type: expected 'classic' "
        "or 'quorum', got 'lazy'",
    ),
    (
        "required provider option missing",
        route(f'queue = "/amq/queue/q"\n{HANDLER}', provider="amqp"),
        "loafer.toml: routes[0] ('orders'): provider_options.url: required option of 'amqp' "
        "(AMQPProvider) missing",
    ),
    (
        "queue missing",
        route(HANDLER),
        "loafer.toml: routes[0] ('orders'): queue: required key missing (the queue or "
        "address 'memory' (MemoryProvider) reads from)",
    ),
    (
        "queue given as a provider option",
        route(f'{HANDLER}\n[routes.provider_options]\nqueue = "q"', provider="rabbit"),
        "loafer.toml: routes[0] ('orders'): provider_options.queue: give the queue as the "
        "route's 'queue' key, not in provider_options",
    ),
    (
        # SQSProvider took its client options as **kwargs and refused a wrong one itself;
        # its settings now list them, so the file's key is named with the closest one
        "a misspelt SQS client option",
        route(
            f'queue = "q"\n{HANDLER}\n[routes.provider_options]\nendpoint = "http://x"',
            provider="sqs",
        ),
        "loafer.toml: routes[0] ('orders'): provider_options.endpoint: unknown option of "
        "'sqs' (SQSProvider) (did you mean 'endpoint_url'?); it takes: aws_access_key_id, "
        "aws_secret_access_key, aws_session_token, close_grace, close_timeout, "
        "config, dead_letter_queue, endpoint_url, options, profile_name, "
        "receive_linger, receive_options, region_name, retry_visibility, session, "
        "settle_linger, use_ssl, verify",
    ),
    (
        "provider options not a table",
        route(MEMORY + '\nprovider_options = "wait=1"'),
        "loafer.toml: routes[0] ('orders'): provider_options: expected a table of the "
        "provider's options, got 'wait=1'",
    ),
    (
        "retry = true",
        route(MEMORY + "\nretry = true"),
        "loafer.toml: routes[0] ('orders'): retry: expected a table {initial, factor, "
        "maximum} or false, got true",
    ),
    (
        "unknown retry key",
        route(MEMORY + "\nretry = {initial = 1, max = 5}"),
        "loafer.toml: routes[0] ('orders'): retry.max: unknown key (did you mean "
        "'maximum'?); allowed: factor, initial, maximum",
    ),
    (
        "retry factor below 1",
        route(MEMORY + "\nretry = {factor = 0.5}"),
        "loafer.toml: routes[0] ('orders'): retry.factor: expected a number >= 1, got 0.5",
    ),
    (
        "publish on a broker route",
        route(f'queue = "q"\n{HANDLER}\npublish = ["x"]', provider="rabbit"),
        "loafer.toml: routes[0] ('orders'): publish: only memory routes take publish (this "
        "route's provider is 'rabbit')",
    ),
    (
        "two routes of one name",
        route(MEMORY) + route('queue = "r"\n' + HANDLER),
        "loafer.toml: routes[1] ('orders'): name: 'orders' is already the name of routes[0]",
    ),
    (
        "no routes",
        "[manager]\nshutdown_timeout = 5\n",
        "loafer.toml: routes: required key missing (expected an array of tables "
        "([[routes]]), at least one)",
    ),
    (
        "[routes] written as one table",
        f'[routes]\nprovider = "memory"\n{MEMORY}\n',
        "loafer.toml: routes: expected an array of tables ([[routes]]), at least one, got a table",
    ),
    (
        "unknown top-level key",
        route(MEMORY) + "[managr]\nshutdown_timeout = 5\n",
        "loafer.toml: managr: unknown key (did you mean 'manager'?); "
        "allowed: manager, publishers, routes",
    ),
    (
        "manager setting of the wrong type",
        '[manager]\nshutdown_timeout = "soon"\n' + route(MEMORY),
        "loafer.toml: manager.shutdown_timeout: expected seconds >= 0, got 'soon'",
    ),
    (
        "environment variable not set",
        route(
            f'queue = "q"\n{HANDLER}\n[routes.provider_options]\nurl = '
            '"amqp://app:${RABBIT_PASSWORD}@127.0.0.1:1/"',
            provider="rabbit",
        ),
        "loafer.toml: routes[0] ('orders'): provider_options.url: environment variable "
        "RABBIT_PASSWORD is not set (set it, or give a default: ${RABBIT_PASSWORD:-default})",
    ),
    (
        "unclosed reference",
        route('queue = "${QUEUE"\n' + HANDLER),
        "loafer.toml: routes[0] ('orders'): queue: unclosed '${' (write '$${' for a literal '${')",
    ),
    (
        "not TOML",
        '[[routes]\nprovider = "memory"\n',
        "loafer.toml: not valid TOML: Expected ']]' at the end of an array declaration "
        "(at line 1, column 9)",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [case[1:] for case in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_each_bad_config_gets_its_own_clear_message(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert problem(tmp_path, text) == expected


def test_the_table_of_bad_configs_has_at_least_15_distinct_messages() -> None:
    assert len({case[2] for case in BAD_CONFIGS}) == len(BAD_CONFIGS) >= 15


def test_every_problem_of_a_file_is_listed_one_per_line(tmp_path: Path) -> None:
    text = route(MEMORY + '\nmax_concurrency = "ten"') + route(
        'queue = "r"\nhandler = "handle"', name="other"
    )
    assert problem(tmp_path, text).splitlines() == [
        "loafer.toml: routes[0] ('orders'): max_concurrency: expected an integer >= 1, got 'ten'",
        "loafer.toml: routes[1] ('other'): handler: expected an import path "
        "'module:attribute', got 'handle'",
    ]


# -- ${VAR} substitution ---------------------------------------------------------------------


def test_variables_and_defaults_are_substituted_in_string_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        route(
            'queue = "${QUEUE}"\n'
            f"{HANDLER}\n"
            'max_concurrency = "${WORKERS:-4}"\n'
            'handler_timeout = "${TIMEOUT:-2.5}"\n'
            "[routes.provider_options]\n"
            'url = "amqp://app:${PASSWORD}@127.0.0.1:1/${VHOST:-}"\n'
            'connection_name = "$${literal}-${EMPTY:-fallback}"\n'
            'declare = "${DECLARE}"\n',
            provider="rabbit",
        ),
    )
    env = {"QUEUE": "orders", "PASSWORD": "s3cret", "EMPTY": "", "DECLARE": "true"}
    config = load_config(path, env)
    settings = config.routes[0]
    assert settings.queue == "orders"
    assert settings.max_concurrency == 4
    assert settings.handler_timeout == 2.5
    assert settings.provider_options["url"] == "amqp://app:s3cret@127.0.0.1:1/"
    assert settings.provider_options["connection_name"] == "${literal}-fallback"
    (built,) = build_routes(config)
    assert isinstance(built.provider, RabbitProvider)
    assert built.provider.queue == "orders"
    # "${DECLARE}" -> "true" -> True (a bool)
    assert built.provider.settings.topology.declare is True
    assert built.provider.settings.connection.name == "${literal}-fallback"
    assert "s3cret" not in repr(built.provider)


def test_a_secret_from_the_environment_is_never_shown_in_an_error(tmp_path: Path) -> None:
    secret = "hunter2-do-not-print"
    env = {"SECRET": secret, "OTHER": "also-private"}
    text = route(
        f'queue = "q"\n{HANDLER}\nmax_concurrency = "${{SECRET}}"\n'
        '[routes.provider_options]\nurl = "amqp://u:${OTHER}@127.0.0.1:1/"\n'
        'heartbeat = "${SECRET}"\n',
        provider="amqp",
    )
    message = problem(tmp_path, text, env)
    assert message == (
        "loafer.toml: routes[0] ('orders'): max_concurrency: expected an integer >= 1, got "
        "the value of ${SECRET} (not shown)"
    )
    fixed = text.replace('max_concurrency = "${SECRET}"\n', "")
    message = problem(tmp_path, fixed, env)
    assert message == (
        "loafer.toml: routes[0] ('orders'): provider_options.heartbeat: expected float | None, "
        "got the value of an environment variable (not shown)"
    )
    missing = problem(tmp_path, fixed.replace("${SECRET}", "${MISSING}"), env)
    assert "MISSING" in missing
    for shown in (message, missing):
        assert secret not in shown and "also-private" not in shown


# -- where the file is -----------------------------------------------------------------------


def test_find_config_prefers_loafer_toml_then_pyproject_with_tool_loafer(tmp_path: Path) -> None:
    assert find_config(tmp_path) is None
    write(tmp_path, '[project]\nname = "x"\n', "pyproject.toml")
    assert find_config(tmp_path) is None  # no [tool.loafer]
    pyproject = write(
        tmp_path,
        '[project]\nname = "x"\n\n[tool.loafer.manager]\nshutdown_timeout = 3\n\n'
        f'[[tool.loafer.routes]]\nname = "jobs"\nprovider = "memory"\n{MEMORY}\n'
        'publish = ["a", "b"]\n',
        "pyproject.toml",
    )
    assert find_config(tmp_path) == pyproject
    config = load_config(pyproject)
    assert config.manager.shutdown_timeout == 3
    assert [r.name for r in build_routes(config)] == ["jobs"]
    own = write(tmp_path, route(MEMORY))
    assert find_config(tmp_path) == own


def test_a_broken_pyproject_holding_the_config_is_found_and_its_error_reported(
    tmp_path: Path,
) -> None:
    broken = write(tmp_path, "[tool.loafer\nroutes = 1\n", "pyproject.toml")
    assert find_config(tmp_path) == broken
    with pytest.raises(ConfigurationError, match=r"pyproject.toml: not valid TOML: "):
        load_config(broken)
    write(tmp_path, "[project\n", "pyproject.toml")
    assert find_config(tmp_path) is None


def test_errors_in_pyproject_name_the_tool_loafer_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[[tool.loafer.routes]]\nname = "jobs"\nprovider = "memory"\n{MEMORY}\nretry = 3\n',
        "pyproject.toml",
    )
    with pytest.raises(ConfigurationError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: tool.loafer.routes[0] ('jobs'): retry: expected a table {{initial, factor, "
        "maximum} or false, got 3"
    )
    empty = write(tmp_path, '[project]\nname = "x"\n', "pyproject.toml")
    with pytest.raises(ConfigurationError, match=r"no \[tool.loafer\] table"):
        load_config(empty)


# -- building routes ---------------------------------------------------------------------------

MIXED = f"""
[manager]
shutdown_timeout = 7

[[routes]]
name = "greetings"
provider = "memory"
queue = "greetings"
handler = "{APP}:Handler"
translator = "{APP}:UpperTranslator"
error_handler = "{APP}:on_error"
max_concurrency = 3
retry = false
publish = ["hello", "world"]

[[routes]]
name = "orders"
provider = "rabbit"
queue = "orders"
handler = "{APP}:handle"
max_concurrency = 20
handler_timeout = 30
max_attempts = 5
retry = {{initial = 2, factor = 3, maximum = 60}}
[routes.provider_options]
url = "amqp://app:${{RABBIT_PASSWORD}}@127.0.0.1:1/"
declare = true
queue_type = "quorum"

[[routes]]
name = "invoices"
provider = "amqp"
queue = "/amq/queue/invoices"
handler = "{APP}:handle"
translator = false
[routes.provider_options]
url = "amqp://127.0.0.1:1"
broker = "rabbitmq"
fetch_wait = 5

[[routes]]
name = "emails"
provider = "sqs"
queue = "emails"
handler = "{APP}:handle"
[routes.provider_options]
endpoint_url = "http://127.0.0.1:1"
region_name = "eu-west-1"
aws_access_key_id = "testing"
aws_secret_access_key = "${{AWS_SECRET:-testing}}"
options = {{WaitTimeSeconds = 1}}
"""


async def test_one_file_builds_routes_for_every_broker_and_runs_its_memory_route(
    tmp_path: Path,
) -> None:
    config = load_config(write(tmp_path, MIXED), {"RABBIT_PASSWORD": "pw"})
    memory, rabbit, amqp, sqs = build_routes(config)

    assert isinstance(memory.provider, MemoryProvider)
    assert memory.provider.broker is config.memory_broker
    assert memory.max_concurrency == 3 and memory.error_handler is config_app.on_error
    assert isinstance(memory.translator, config_app.UpperTranslator)

    assert isinstance(rabbit.provider, RabbitProvider)
    assert rabbit.name == "orders" and rabbit.max_concurrency == 20
    assert (rabbit.handler_timeout, rabbit.max_attempts) == (30, 5)
    assert rabbit.provider.settings.topology.declare is True
    assert rabbit.provider.settings.topology.queue_type == "quorum"
    assert "pw@" not in repr(rabbit.provider)

    assert isinstance(amqp.provider, AMQPProvider)
    assert (amqp.provider.address, amqp.provider.broker) == ("/amq/queue/invoices", "rabbitmq")
    assert amqp.translator is None

    assert isinstance(sqs.provider, SQSProvider)
    assert sqs.provider.describe() == "sqs:emails"

    manager = build_manager(config)
    assert manager.shutdown_timeout == 7 and len(manager.routes) == 4

    # the memory route, end to end: its published bodies through the configured translator
    report = await run_until_idle(memory, timeout=10)
    assert sorted(config_app.HANDLED) == ["HELLO", "WORLD"]
    assert report is not None


def test_retry_settings_become_a_retry_policy(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MIXED), {"RABBIT_PASSWORD": "pw"})
    _, rabbit, _, _ = build_routes(config)
    assert rabbit.retry == RetryPolicy(initial=2, factor=3, maximum=60)


@pytest.mark.rabbit
async def test_a_rabbitmq_route_from_a_config_file_handles_a_real_message(
    tmp_path: Path, rabbit_url: str, admin: RabbitAdmin
) -> None:
    queue = await admin.declare(unique("loafer-config"))
    await admin.put(queue, b"from the broker")
    text = route(
        f'queue = "{queue}"\n'
        f'handler = "{APP}:Handler"\n'
        f'translator = "{APP}:UpperTranslator"\n'
        "[routes.provider_options]\n"
        'url = "${RABBIT_URL}"\n',
        provider="rabbit",
    )
    config = load_config(write(tmp_path, text), {"RABBIT_URL": rabbit_url})
    seen: asyncio.Queue[object] = asyncio.Queue()
    config_app.SEEN = seen
    manager = build_manager(config)
    async with manager:
        async with asyncio.timeout(20):
            assert await seen.get() == "FROM THE BROKER"
    assert await admin.wait_count(queue, 0) == 0


def test_the_documented_example_validates(tmp_path: Path) -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    # the first TOML block; tests/loafer_cli/test_config_features.py loads the others
    example = re.findall(r"```toml\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)[0]
    env = {"RABBIT_PASSWORD": "pw", "AMQP_PASSWORD": "pw"}
    config = load_config(write(tmp_path, example), env)
    assert [r.provider for r in config.routes] == ["memory", "rabbit", "amqp", "sqs"]
    assert config.routes[1].max_concurrency == 20
    assert config.routes[3].provider_options["region_name"] == "eu-west-1"


PLUGIN = '''
from loafer_core.provider import Capabilities


class TopicProvider:
    """A third-party provider: its queue parameter is named `topic`."""

    def __init__(self, topic: str, *, colour: str = "blue", size: int = 1) -> None:
        self.topic, self.colour, self.size = topic, colour, size

    @property
    def capabilities(self):
        return Capabilities()

    async def start(self, capacity):
        pass

    async def fetch(self, max_messages):
        return []

    async def settle(self, delivery, outcome):
        pass

    async def close(self):
        pass
'''


def test_a_third_party_plugin_works_by_its_entry_point_name_with_no_code_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    (site / "thirdparty_loafer").mkdir(parents=True)
    (site / "thirdparty_loafer" / "__init__.py").write_text(PLUGIN, encoding="utf-8")
    dist = site / "thirdparty_loafer-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: thirdparty-loafer\nVersion: 1.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        "[loafer.providers]\ntopics = thirdparty_loafer:TopicProvider\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(site))
    # stevedore keeps each group's entry points for the process's life: a plugin is
    # installed before the service starts, here after other tests loaded the group
    monkeypatch.setattr(ExtensionManager, "ENTRY_POINT_CACHE", {})
    text = route(
        f'queue = "news"\n{HANDLER}\n[routes.provider_options]\ncolour = "red"\n'
        'size = "${SIZE}"\n',
        provider="topics",
    )
    (built,) = build_routes(load_config(write(tmp_path, text), {"SIZE": "3"}))
    provider = built.provider
    assert type(provider).__name__ == "TopicProvider"
    assert (provider.topic, provider.colour, provider.size) == ("news", "red", 3)  # type: ignore[attr-defined]
    message = problem(tmp_path, text.replace("colour", "color"), {"SIZE": "3"})
    assert message == (
        "loafer.toml: routes[0] ('orders'): provider_options.color: unknown option of "
        "'topics' (TopicProvider) (did you mean 'colour'?); it takes: colour, size"
    )


def test_handlers_import_from_the_config_files_directory(tmp_path: Path) -> None:
    (tmp_path / "local_app_for_config.py").write_text(
        "async def handle(content, metadata):\n    return True\n", encoding="utf-8"
    )
    text = route('queue = "q"\nhandler = "local_app_for_config:handle"')
    (built,) = build_routes(load_config(write(tmp_path, text)))
    assert built.handler.__module__ == "local_app_for_config"
    assert sys.path[0] == str(tmp_path.resolve())


def test_a_value_a_setting_refuses_points_at_its_option(tmp_path: Path) -> None:
    """The right type but refused by the settings' check: said at the option's key."""
    text = route(
        f'queue = "q"\n{HANDLER}\n[routes.provider_options]\npoll_timeout = -1',
        provider="rabbit",
    )
    assert problem(tmp_path, text) == (
        "loafer.toml: routes[0] ('orders'): provider_options.poll_timeout: "
        "expected seconds > 0, got -1"
    )


def test_a_refused_value_from_the_environment_is_not_shown(tmp_path: Path) -> None:
    text = route(
        f'queue = "q"\n{HANDLER}\n[routes.provider_options]\nprefetch_headroom = "${{HEADROOM}}"',
        provider="rabbit",
    )
    message = problem(tmp_path, text, {"HEADROOM": "-7"})
    assert message.endswith(
        "provider_options.prefetch_headroom: expected an int >= 0, got the value of an "
        "environment variable (not shown)"
    ), message
    assert "-7" not in message
