"""``loafer asyncapi``: the service's AsyncAPI 3.0 document, validated against the official
JSON Schema (vendored in tests/data/asyncapi, resolved offline), built without
connecting to any broker."""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pydantic
import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT7

from loafer_amqp.publisher import AMQPPublisher
from loafer_cli.asyncapi import build_document, find_publishers, render
from loafer_core import Handlers, Manager, Route, header
from loafer_core.errors import ConfigurationError
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.provider import Describable, Description, Server
from loafer_nats import NATSPublisher, NATSRoute
from loafer_rabbit import RabbitPublisher
from loafer_redis import RedisPublisher, RedisRoute
from loafer_sqs import SQSProvider
from loafer_sqs.publisher import SNSPublisher, SQSPublisher
from tests.loafer_cli.asyncapi_service import (
    SECRETS,
    USERS,
    OrderCreated,
    Ping,
    Shipped,
    on_created,
    on_ping,
    service,
    untyped,
)
from tests.loafer_cli.runner import loafer

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "tests" / "data" / "asyncapi" / "3.0.0.json"


def document(manager: Manager | None = None, **options: Any) -> dict[str, Any]:
    options.setdefault("title", "test service")
    return build_document(manager or service(), **options)


# -- the official schema, offline --------------------------------------------------------


def _no_network(uri: str) -> Any:
    raise NoSuchResource(ref=uri)  # a reference outside the vendored file: fail, never fetch


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> Draft7Validator:
    resource = DRAFT7.create_resource(schema)
    registry = Registry(retrieve=_no_network).with_resource(schema["$id"], resource).crawl()
    return Draft7Validator(schema, registry=registry)


def errors_of(validator: Draft7Validator, doc: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
        for e in validator.iter_errors(doc)
    ]


def _in_doc(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: ("urn:doc" + v if k == "$ref" and v.startswith("#/") else _in_doc(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_in_doc(v) for v in node]
    return node


def payload_validator(doc: dict[str, Any], payload: dict[str, Any]) -> Draft7Validator:
    """A validator of one message payload, its ``#/components/...`` references resolved
    in ``doc``."""
    registry: Registry[Any] = Registry().with_resource("urn:doc", DRAFT7.create_resource(doc))
    return Draft7Validator({"allOf": [_in_doc(payload)]}, registry=registry)


def test_the_vendored_schema_is_the_official_3_0_0(schema: dict[str, Any]) -> None:
    assert schema["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    assert schema["properties"]["asyncapi"]["const"] == "3.0.0"


def test_the_validator_resolves_offline_and_rejects_what_is_wrong(
    validator: Draft7Validator,
) -> None:
    good = document()
    assert errors_of(validator, good) == []
    # each of these breaks a rule held in a referenced definition (not the root): the
    # references are followed, so validation is not vacuous
    broken = json.loads(json.dumps(good))
    broken["channels"]["orders"]["bindings"]["amqp"] = {"is": "queue"}  # no queue
    assert errors_of(validator, broken)
    broken = json.loads(json.dumps(good))
    broken["operations"]["receive_orders"]["action"] = "consume"
    assert errors_of(validator, broken)
    broken = json.loads(json.dumps(good))
    broken["components"]["schemas"]["OrderCreated"]["type"] = "record"  # not draft-07
    assert errors_of(validator, broken)
    broken = json.loads(json.dumps(good))
    del broken["servers"][next(iter(broken["servers"]))]["protocol"]
    assert errors_of(validator, broken)


# -- the document ------------------------------------------------------------------------


def test_the_document_is_valid_asyncapi_3(validator: Draft7Validator) -> None:
    doc = document(version="2.1.0")
    assert errors_of(validator, doc) == []
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "test service"
    assert doc["info"]["version"] == "2.1.0"
    # YAML says the same
    assert yaml.safe_load(render(doc, "yaml")) == json.loads(render(doc, "json"))


def test_yaml_without_pyyaml_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml raises ImportError
    with pytest.raises(ConfigurationError, match=r"pip install pyyaml"):
        render(document(), "yaml")
    assert json.loads(render(document(), "json"))["asyncapi"] == "3.0.0"


def test_a_channel_and_a_receive_operation_per_route() -> None:
    doc = document()
    channels, operations = doc["channels"], doc["operations"]
    receive = {k: v for k, v in operations.items() if v["action"] == "receive"}
    assert len(receive) == 5
    addresses = {
        channels[op["channel"]["$ref"].rpartition("/")[2]]["address"] for op in receive.values()
    }
    assert addresses == {"mem-q", "orders", "/amq/queue/pings", "refunds.fifo", "notes"}
    for operation in operations.values():
        channel_id = operation["channel"]["$ref"].removeprefix("#/channels/")
        channel = channels[channel_id]
        # every message of the channel, each a reference into the channel
        refs = [m["$ref"] for m in operation["messages"]]
        assert refs == [f"#/channels/{channel_id}/messages/{m}" for m in channel["messages"]]


def test_each_brokers_bindings_and_servers() -> None:
    doc = document()
    channels, servers = doc["channels"], doc["servers"]

    def server_of(channel: dict[str, Any]) -> dict[str, Any]:
        (ref,) = channel["servers"]
        return servers[ref["$ref"].removeprefix("#/servers/")]

    orders = channels["orders"]
    assert orders["bindings"] == {
        "amqp": {
            "is": "queue",
            "queue": {"name": "orders", "vhost": "prod", "durable": True},
            "bindingVersion": "0.3.0",
        }
    }
    assert server_of(orders) == {
        "host": "rabbit.example:5673",
        "protocol": "amqp",
        "protocolVersion": "0-9-1",
    }
    assert doc["operations"]["receive_orders"]["bindings"] == {
        "amqp": {"ack": True, "bindingVersion": "0.3.0"}
    }

    (pings,) = [c for c in channels.values() if c["address"] == "/amq/queue/pings"]
    assert pings["bindings"] == {"amqp1": {}}
    assert server_of(pings)["host"] == "amqp.example:5671"  # amqps
    assert server_of(pings)["protocol"] == "amqp1"

    refunds = channels["refunds"]
    assert refunds["bindings"]["sqs"]["queue"] == {"name": "refunds.fifo", "fifoQueue": True}
    assert refunds["bindings"]["sqs"]["deadLetterQueue"] == {
        "name": "refunds-dead.fifo",
        "fifoQueue": True,
    }
    assert server_of(refunds) == {"host": "sqs.eu-west-1.amazonaws.com", "protocol": "sqs"}
    assert server_of(channels["notes"]) == {"host": "127.0.0.1:5000", "protocol": "sqs"}

    memory = channels["memory-route"]
    assert memory["address"] == "mem-q"
    assert "bindings" not in memory and "servers" not in memory
    assert memory["x-loafer-provider"] == "memory"

    # one server per broker: the rabbit route and the rabbit publisher share one
    hosts = sorted((s["protocol"], s["host"]) for s in servers.values())
    assert hosts == [
        ("amqp", "rabbit.example:5673"),
        ("amqp1", "amqp.example:5671"),
        ("amqp1", "amqp.example:5672"),
        ("sns", "sns.us-east-1.amazonaws.com"),
        ("sqs", "127.0.0.1:5000"),
        ("sqs", "sqs.eu-west-1.amazonaws.com"),
    ]


def test_an_sqs_queue_without_region_or_endpoint_has_a_region_variable(
    validator: Draft7Validator,
) -> None:
    route = Route(SQSProvider("jobs"), untyped, name="jobs")
    doc = document(Manager([route]))
    assert errors_of(validator, doc) == []
    (server,) = doc["servers"].values()
    assert server["host"] == "sqs.{region}.amazonaws.com"
    assert set(server["variables"]) == {"region"}


def test_a_send_operation_per_publisher() -> None:
    doc = document()
    channels = doc["channels"]
    send = [op for op in doc["operations"].values() if op["action"] == "send"]
    assert len(send) == 3
    by_address = {
        channels[op["channel"]["$ref"].removeprefix("#/channels/")]["address"]: op for op in send
    }
    assert set(by_address) == {
        "order.shipped",
        "arn:aws:sns:us-east-1:123456789012:audit",
        "/queue/out",
    }
    shipped = by_address["order.shipped"]
    assert shipped["bindings"] == {
        "amqp": {"deliveryMode": 1, "mandatory": True, "bindingVersion": "0.3.0"}
    }
    channel = channels[shipped["channel"]["$ref"].removeprefix("#/channels/")]
    assert channel["bindings"]["amqp"] == {
        "is": "routingKey",
        "exchange": {"name": "events", "vhost": "prod"},
        "bindingVersion": "0.3.0",
    }
    # the publisher's message_type gives the payload
    (message,) = channel["messages"].values()
    assert message["payload"] == {"$ref": "#/components/schemas/Shipped"}
    audit = channels[
        by_address["arn:aws:sns:us-east-1:123456789012:audit"]["channel"]["$ref"].removeprefix(
            "#/channels/"
        )
    ]
    assert audit["bindings"] == {"sns": {"name": "audit", "bindingVersion": "0.1.0"}}


@pytest.mark.parametrize(
    ("channel", "message", "valid", "invalid"),
    [
        (
            "orders",
            "OrderCreated",
            {"id": 1, "items": [{"sku": "a"}]},
            {"id": 1, "items": [{"quantity": 2}]},  # a nested Item without its sku
        ),
        ("orders", "Refund", {"order": 1, "amount": 2.5}, {"order": "one", "amount": 2.5}),
        ("refunds", "Refund", {"order": 1, "amount": 2.5}, {"amount": 2.5}),
        ("notes", "Note", {"text": "hi"}, {"text": 3}),
    ],
)
def test_message_payloads_are_the_handlers_json_schemas(
    channel: str, message: str, valid: Any, invalid: Any
) -> None:
    doc = document()
    payload = doc["channels"][channel]["messages"][message]["payload"]
    check = payload_validator(doc, payload)
    assert list(check.iter_errors(valid)) == []
    assert list(check.iter_errors(invalid))


def test_components_hold_each_model_once_with_references_rewritten() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    assert set(schemas) == {"OrderCreated", "Item", "Refund", "Ping", "Note", "Shipped"}
    assert schemas["OrderCreated"]["properties"]["items"]["items"] == {
        "$ref": "#/components/schemas/Item"
    }
    assert "$defs" not in json.dumps(doc)


def test_handlers_routes_note_each_messages_discriminator() -> None:
    doc = document()
    orders = doc["channels"]["orders"]
    assert orders["x-loafer-discriminator"] == {"header": "type"}
    created = orders["messages"]["OrderCreated"]
    assert created["headers"] == {
        "type": "object",
        "properties": {"type": {"const": "order.created"}},
        "required": ["type"],
    }
    assert created["payload"] == {"$ref": "#/components/schemas/OrderCreated"}
    assert created["x-loafer-discriminator"] == {"header": "type", "value": "order.created"}
    fallback = orders["messages"]["untyped"]
    assert fallback["payload"] == {}
    assert fallback["x-loafer-when"] == "anything"

    (pings,) = [c for c in doc["channels"].values() if c["address"] == "/amq/queue/pings"]
    assert pings["x-loafer-discriminator"] == {"field": "kind"}
    ping = pings["messages"]["Ping"]
    check = payload_validator(doc, ping["payload"])
    assert list(check.iter_errors({"kind": "ping", "n": 1})) == []
    assert list(check.iter_errors({"kind": "note", "n": 1}))  # another kind's message
    assert list(check.iter_errors({"n": 1}))  # no discriminator


def test_an_untyped_handler_takes_any_payload() -> None:
    doc = document()
    (message,) = doc["channels"]["memory-route"]["messages"].values()
    assert message["payload"] == {}
    assert message["summary"] == "handled by untyped"


def test_no_secret_nor_user_name_in_the_document() -> None:
    for fmt in ("json", "yaml"):
        text = render(document(), fmt)
        for secret in (*SECRETS, *USERS, "AKIAEXAMPLE"):
            assert secret not in text, (fmt, secret)


def test_a_password_with_url_delimiters_is_not_taken_for_the_host() -> None:
    route = Route(MemoryProvider(MemoryBroker(), "q"), untyped, name="q")
    manager = Manager([route])
    manager.services.append(
        SQSPublisher("out", endpoint_url="http://weird:sl/ash?5ecret#x@127.0.0.1:5001")
    )
    manager.services.append(RabbitPublisher("amqp://weird:sl%2Fash%235ecret@rabbit.example/"))
    text = render(document(manager))
    assert "5ecret" not in text and "weird" not in text
    hosts = sorted(s["host"] for s in json.loads(text)["servers"].values())
    assert hosts == ["127.0.0.1:5001", "rabbit.example:5672"]


def test_building_the_document_connects_to_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a connection was attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    manager = service()  # the routes and publishers built under the patch too
    doc = document(manager)
    assert len(doc["operations"]) == 8


class Opaque:
    """A type pydantic has no JSON Schema for."""


class Strange(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
    thing: Opaque


async def on_strange(message: Strange, metadata: Any) -> None: ...


def test_a_model_without_a_json_schema_is_warned_about_and_described_as_an_object(
    validator: Draft7Validator,
) -> None:
    warnings: list[str] = []
    route = Route(MemoryProvider(MemoryBroker(), "strange"), on_strange, name="strange")
    doc = document(Manager([route]), warn=warnings.append)
    assert errors_of(validator, doc) == []
    (warning,) = warnings
    assert "Strange" in warning
    assert doc["components"]["schemas"]["Strange"]["type"] == "object"


EventA = pydantic.create_model("Event", a=(int, ...))
EventB = pydantic.create_model("Event", b=(str, ...))


async def on_event_a(event: EventA, metadata: Any) -> None: ...  # type: ignore[valid-type]


async def on_event_b(event: EventB, metadata: Any) -> None: ...  # type: ignore[valid-type]


def test_same_named_models_of_different_shapes_get_distinct_components() -> None:
    broker = MemoryBroker()
    routes = [
        Route(MemoryProvider(broker, "one"), on_event_a, name="one"),
        Route(MemoryProvider(broker, "two"), on_event_b, name="two"),
        Route(MemoryProvider(broker, "three"), on_event_a, name="three"),
    ]
    doc = document(Manager(routes))
    refs = [
        next(iter(doc["channels"][c]["messages"].values()))["payload"]["$ref"]
        for c in ("one", "two", "three")
    ]
    assert refs == [
        "#/components/schemas/Event",
        "#/components/schemas/Event_2",
        "#/components/schemas/Event",
    ]
    assert set(doc["components"]["schemas"]["Event"]["properties"]) == {"a"}
    assert set(doc["components"]["schemas"]["Event_2"]["properties"]) == {"b"}


class Cat(pydantic.BaseModel):
    kind: typing.Literal["cat"]
    lives: int


class Dog(pydantic.BaseModel):
    kind: typing.Literal["dog"]


class Owner(pydantic.BaseModel):
    pet: typing.Annotated[Cat | Dog, pydantic.Field(discriminator="kind")]
    discriminator: str  # a field of that name stays a field


class Tagged(msgspec.Struct, tag=True):
    x: int


class Other(msgspec.Struct, tag=True):
    y: str


class Box(msgspec.Struct):
    content: Tagged | Other


async def on_owner(owner: Owner, metadata: Any) -> None: ...


async def on_box(box: Box, metadata: Any) -> None: ...


def test_tagged_unions_are_valid_asyncapi(validator: Draft7Validator) -> None:
    broker = MemoryBroker()
    routes = [
        Route(MemoryProvider(broker, "owners"), on_owner, name="owners"),
        Route(MemoryProvider(broker, "boxes"), on_box, name="boxes"),
    ]
    doc = document(Manager(routes))
    # pydantic and msgspec write OpenAPI's discriminator object; AsyncAPI's is a string
    assert errors_of(validator, doc) == []
    schemas = doc["components"]["schemas"]
    pet = schemas["Owner"]["properties"]["pet"]
    assert pet["x-discriminator"] == {
        "propertyName": "kind",
        "mapping": {"cat": "#/components/schemas/Cat", "dog": "#/components/schemas/Dog"},
    }
    assert "discriminator" in schemas["Owner"]["properties"]
    assert schemas["Box"]["properties"]["content"]["x-discriminator"]["mapping"] == {
        "Tagged": "#/components/schemas/Tagged",
        "Other": "#/components/schemas/Other",
    }
    check = payload_validator(doc, doc["channels"]["owners"]["messages"]["Owner"]["payload"])
    good = {"pet": {"kind": "cat", "lives": 9}, "discriminator": "x"}
    assert list(check.iter_errors(good)) == []
    assert list(check.iter_errors({**good, "pet": {"kind": "cat"}}))


class BrokenDescription(MemoryProvider):
    def asyncapi_channel(self) -> dict[str, Any]:
        raise RuntimeError("cannot say")


def test_a_description_that_fails_is_warned_about(validator: Draft7Validator) -> None:
    warnings: list[str] = []
    route = Route(BrokenDescription(MemoryBroker(), "q"), untyped, name="broken")
    doc = document(Manager([route]), warn=warnings.append)
    assert errors_of(validator, doc) == []
    (warning,) = warnings
    assert "broken" in warning and "RuntimeError: cannot say" in warning
    assert doc["channels"]["broken"]["address"] == "q"
    assert "servers" not in doc


class DescribedProvider(MemoryProvider):
    """A third-party provider describing its own channel (the extension point)."""

    def asyncapi_channel(self) -> dict[str, Any]:
        return {
            "address": "events.v1",
            "protocol": "kafka",
            "protocolVersion": "3.6",
            "host": "user:pw-in-host@kafka.example:9092",
            "bindings": {"kafka": {"topic": "events.v1", "bindingVersion": "0.5.0"}},
            "kind": "kafka",
        }


class DescribedPublisher:
    message_type = Ping

    def asyncapi_channel(self) -> dict[str, Any]:
        return {"address": "pings.out", "kind": "custom"}

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def test_providers_and_publishers_may_describe_themselves(validator: Draft7Validator) -> None:
    route = Route(DescribedProvider(MemoryBroker(), "q"), on_ping, name="described")
    manager = Manager([route])
    publisher = DescribedPublisher()
    manager.services.append(publisher)
    named = DescribedPublisher()
    manager.publishers = {"pings": named}  # type: ignore[attr-defined]
    assert find_publishers(manager) == [("pings", named), (None, publisher)]
    doc = document(manager)
    assert errors_of(validator, doc) == []
    channel = doc["channels"]["described"]
    assert channel["address"] == "events.v1"
    assert channel["bindings"] == {"kafka": {"topic": "events.v1", "bindingVersion": "0.5.0"}}
    (server,) = doc["servers"].values()
    assert server == {"host": "kafka.example:9092", "protocol": "kafka", "protocolVersion": "3.6"}
    assert doc["channels"]["publisher_pings"]["title"] == "pings"
    sent = [c for c in doc["channels"].values() if c["address"] == "pings.out"]
    assert len(sent) == 2
    assert all(
        next(iter(c["messages"].values()))["payload"] == {"$ref": "#/components/schemas/Ping"}
        for c in sent
    )


class KafkaLikeProvider(MemoryProvider):
    """A third-party provider implementing :class:`Describable` (no ``asyncapi_channel``)."""

    def description(self) -> Description:
        return Description(
            kind="kafka",
            system="kafka",
            destination="events.v1",
            address="kafka://user:******@kafka.example:9092",
            server=Server(protocol="kafka", host="kafka.example:9092", protocol_version="3.6"),
            bindings={"kafka": {"topic": "events.v1", "bindingVersion": "0.5.0"}},
            operation_bindings={"kafka": {"groupId": {"type": "string"}}},
            summary="the events topic",
            extensions={"x-loafer-kafka": {"partitions": 3}, "not-an-extension": 1},
        )


class KafkaLikePublisher:
    """A Describable publisher: found among the services by ``description`` + ``publish``."""

    message_type = Ping

    def description(self) -> Description:
        return Description(kind="kafka", system="kafka", destination="pings.out")

    async def publish(self, body: Any, **options: Any) -> None: ...


class DescribedService:
    """Describable but no publisher: not a channel of the document."""

    def description(self) -> Description:
        return Description(kind="other", system="other", destination="nowhere")


def test_a_describable_plugin_appears_in_the_document(validator: Draft7Validator) -> None:
    route = Route(KafkaLikeProvider(MemoryBroker(), "q"), on_ping, name="events")
    manager = Manager([route])
    publisher = KafkaLikePublisher()
    manager.services.extend([publisher, DescribedService()])
    assert find_publishers(manager) == [(None, publisher)]
    doc = document(manager)
    assert errors_of(validator, doc) == []
    channel = doc["channels"]["events"]
    assert channel["address"] == "events.v1" and channel["description"] == "the events topic"
    assert channel["x-loafer-provider"] == "kafka"
    assert channel["bindings"] == {"kafka": {"topic": "events.v1", "bindingVersion": "0.5.0"}}
    (server,) = doc["servers"].values()
    assert server == {"host": "kafka.example:9092", "protocol": "kafka", "protocolVersion": "3.6"}
    operation = doc["operations"]["receive_events"]
    assert operation["bindings"] == {"kafka": {"groupId": {"type": "string"}}}
    assert operation["x-loafer-kafka"] == {"partitions": 3}
    assert "not-an-extension" not in operation
    (sent,) = [c for c in doc["channels"].values() if c["address"] == "pings.out"]
    assert next(iter(sent["messages"].values()))["payload"] == {"$ref": "#/components/schemas/Ping"}
    assert "servers" not in sent


class WrongDescription(MemoryProvider):
    def description(self) -> Any:
        return {"address": "x"}


def test_a_description_of_the_wrong_type_is_warned_about() -> None:
    warnings: list[str] = []
    route = Route(WrongDescription(MemoryBroker(), "q"), untyped, name="wrong")
    doc = document(Manager([route]), warn=warnings.append)
    (warning,) = warnings
    assert "expected a loafer_core.provider.Description" in warning
    assert doc["channels"]["wrong"]["address"] == "q"


def test_every_bundled_provider_and_publisher_describes_itself_without_secrets() -> None:
    url = "amqp://user:pw-secret9@127.0.0.1:1/"
    objects: list[object] = [
        RabbitPublisher(url),
        AMQPPublisher(url, "/queue/x"),
        SQSProvider("q", region_name="eu-west-1", endpoint_url="http://u:pw-secret9@h:1"),
        SQSPublisher("q", region_name="eu-west-1"),
        SNSPublisher("topic", region_name="eu-west-1"),
        NATSPublisher("s", url="nats://user:pw-secret9@127.0.0.1:1"),
        RedisPublisher("s", url="redis://user:pw-secret9@127.0.0.1:1/0"),
        MemoryProvider(MemoryBroker(), "q"),
    ]
    for obj in objects:
        assert isinstance(obj, Describable), obj
        described = obj.description()
        assert isinstance(described, Description)
        assert "pw-secret9" not in repr(described), described
        assert described.kind and described.system
        assert described.server is not None or described.kind == "memory", described


def test_publishers_of_each_bundled_kind_are_found_in_the_services() -> None:
    manager = Manager([Route(MemoryProvider(MemoryBroker(), "q"), untyped)])
    publishers = [
        RabbitPublisher("amqp://127.0.0.1:1/"),
        AMQPPublisher("amqp://127.0.0.1:1", "/queue/x"),
        SQSPublisher("q", region_name="eu-west-1"),
        SNSPublisher("topic", region_name="eu-west-1"),
    ]

    class NotAPublisher:
        async def start(self) -> None: ...

        async def close(self) -> None: ...

    manager.services.extend([*publishers, NotAPublisher()])
    assert [p for _, p in find_publishers(manager)] == publishers


def test_a_routes_publish_to_targets_are_its_publishers() -> None:
    audit = SNSPublisher("topic", region_name="eu-west-1")
    out = RabbitPublisher("amqp://127.0.0.1:1/", routing_key="out")
    route = Route(
        MemoryProvider(MemoryBroker(), "q"), untyped, publish_to={"audit": audit, "out": out}
    )
    manager = Manager([route])
    assert find_publishers(manager) == [("audit", audit), ("out", out)]
    doc = build_document(manager, title="forwarder")
    send = [op for op in doc["operations"].values() if op["action"] == "send"]
    assert len(send) == 2


def test_nats_routes_and_publishers_are_valid_and_show_no_credential(
    validator: Draft7Validator,
) -> None:
    """A NATS route (a durable consumer of a stream) and NATS publishers: servers with
    protocol ``nats``, host:port only; the consumer as the ``nats`` operation binding's
    ``queue``; no user name, password or token anywhere."""
    handlers = Handlers(discriminator=header("type"))
    handlers.on(OrderCreated)(on_created)
    route = NATSRoute(
        "ORDERS",
        url="nats://natsuser:nats-pw-5ecret@nats.example:4222",
        consumer="billing",
        handler=handlers,
    )
    publisher = NATSPublisher("orders.shipped", url="nats://natsuser:nats-pw-5ecret@nats.example")
    publisher.message_type = Shipped  # type: ignore[attr-defined]
    manager = Manager([route])
    manager.services.append(publisher)
    manager.services.append(
        NATSPublisher(
            "audit.orders",
            url="tls://nats-t0ken-5ecret@secure.example:4443",
            connection_options={"password": "option-pw-5ecret"},
        )
    )
    doc = document(manager)
    assert errors_of(validator, doc) == []
    for fmt in ("json", "yaml"):
        text = render(doc, fmt)
        for secret in ("natsuser", "nats-pw-5ecret", "nats-t0ken-5ecret", "option-pw-5ecret"):
            assert secret not in text, (fmt, secret)

    servers = doc["servers"]
    assert sorted(servers.values(), key=lambda s: s["host"]) == [
        {"host": "nats.example:4222", "protocol": "nats", "description": "NATS"},
        {"host": "secure.example:4443", "protocol": "nats", "description": "NATS over TLS"},
    ]
    channels = doc["channels"]
    received = channels["nats_ORDERS_billing"]  # the default route name, nats:ORDERS/billing
    assert received["address"] == "ORDERS"
    assert received["x-loafer-provider"] == "nats"
    assert "billing" in received["description"] and "ORDERS" in received["description"]
    assert received["x-loafer-discriminator"] == {"header": "type"}
    (message,) = received["messages"].values()
    assert message["payload"] == {"$ref": "#/components/schemas/OrderCreated"}
    assert message["headers"]["properties"] == {"type": {"const": "OrderCreated"}}
    receive = [op for op in doc["operations"].values() if op["action"] == "receive"]
    assert [op["bindings"] for op in receive] == [
        {"nats": {"queue": "billing", "bindingVersion": "0.1.0"}}
    ]
    sent = {c["address"]: c for c in channels.values() if c["address"] != "ORDERS"}
    assert set(sent) == {"orders.shipped", "audit.orders"}
    # the route and the publisher on one server share it
    assert sent["orders.shipped"]["servers"] == received["servers"]
    assert sent["orders.shipped"]["servers"] != sent["audit.orders"]["servers"]
    (shipped,) = sent["orders.shipped"]["messages"].values()
    assert shipped["payload"] == {"$ref": "#/components/schemas/Shipped"}
    send = [op for op in doc["operations"].values() if op["action"] == "send"]
    assert len(send) == 2 and all("bindings" not in op for op in send)


def test_redis_routes_and_publishers_are_valid_and_show_no_credential(
    validator: Draft7Validator,
) -> None:
    """A Redis route (a consumer group of a stream) and Redis publishers: servers with
    protocol ``redis``, host:port only (the database as the pathname); the group in the
    receive operation's ``x-loafer-redis`` (AsyncAPI's redis bindings have no fields);
    no user name, password or secret query value anywhere."""
    handlers = Handlers(discriminator=header("type"))
    handlers.on(OrderCreated)(on_created)
    route = RedisRoute(
        "orders",
        url="redis://redisuser:redis-pw-5ecret@redis.example:6380/0",
        group="billing",
        handler=handlers,
    )
    publisher = RedisPublisher(
        "orders.shipped", url="redis://redisuser:redis-pw-5ecret@redis.example:6380"
    )
    publisher.message_type = Shipped  # type: ignore[attr-defined]
    manager = Manager([route])
    manager.services.append(publisher)
    manager.services.append(
        RedisPublisher(
            "audit",
            url="rediss://:lone-pw-5ecret@secure.example/3?password=query-pw-5ecret",
            maxlen=1000,
            connection_options={"password": "option-pw-5ecret"},
        )
    )
    manager.services.append(RedisPublisher("local", url="unix:///run/redis-5ecret.sock"))
    doc = document(manager)
    assert errors_of(validator, doc) == []
    for fmt in ("json", "yaml"):
        text = render(doc, fmt)
        for secret in (
            "redisuser",
            "redis-pw-5ecret",
            "lone-pw-5ecret",
            "query-pw-5ecret",
            "option-pw-5ecret",
            "redis-5ecret.sock",  # nor a unix socket's path taken for a host
        ):
            assert secret not in text, (fmt, secret)

    servers = doc["servers"]
    assert sorted(servers.values(), key=lambda s: s["host"]) == [
        {"host": "redis.example:6380", "protocol": "redis", "description": "Redis"},
        {
            "host": "secure.example:6379",
            "protocol": "redis",
            "pathname": "/3",
            "description": "Redis over TLS",
        },
    ]
    channels = doc["channels"]
    received = channels["redis_orders_billing"]  # the default route name, redis:orders:billing
    assert received["address"] == "orders"
    assert received["x-loafer-provider"] == "redis"
    assert "billing" in received["description"] and "orders" in received["description"]
    assert "bindings" not in received
    assert received["x-loafer-discriminator"] == {"header": "type"}
    (message,) = received["messages"].values()
    assert message["payload"] == {"$ref": "#/components/schemas/OrderCreated"}
    assert message["headers"]["properties"] == {"type": {"const": "OrderCreated"}}
    receive = [op for op in doc["operations"].values() if op["action"] == "receive"]
    assert [op.get("bindings") for op in receive] == [None]
    assert [op["x-loafer-redis"] for op in receive] == [
        {"group": "billing", "deadLetterStream": "orders:dead"}
    ]
    sent = {c["address"]: c for c in channels.values() if c["address"] != "orders"}
    assert set(sent) == {"orders.shipped", "audit", "local"}
    # the route and the publisher on one server share it
    assert sent["orders.shipped"]["servers"] == received["servers"]
    assert sent["orders.shipped"]["servers"] != sent["audit"]["servers"]
    assert "servers" not in sent["local"]  # a unix socket: no network server
    assert "about 1000 entries" in sent["audit"]["description"]
    (shipped,) = sent["orders.shipped"]["messages"].values()
    assert shipped["payload"] == {"$ref": "#/components/schemas/Shipped"}
    send = [op for op in doc["operations"].values() if op["action"] == "send"]
    assert len(send) == 3 and all("bindings" not in op for op in send)
    assert not any(key.startswith("x-loafer-redis") for op in send for key in op)


# -- the command -------------------------------------------------------------------------

APP = textwrap.dedent(
    """
    from tests.loafer_cli.asyncapi_service import service

    manager = service()
    """
)
#: a target that imports no broker library (quicker to start)
SMALL = textwrap.dedent(
    """
    from loafer_core import Route
    from loafer_core.memory import MemoryBroker, MemoryProvider


    async def handle(content, metadata):
        pass


    routes = [Route(MemoryProvider(MemoryBroker(), "q"), handle)]
    not_routes = 42
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "small.py").write_text(SMALL)
    yield tmp_path


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


def test_the_command_writes_the_document(project: Path, validator: Draft7Validator) -> None:
    done = loafer("asyncapi", "app:manager", cwd=project, env=_env())
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert errors_of(validator, doc) == []
    assert doc["info"]["title"] == "app:manager"
    assert len(doc["channels"]) == 8
    for secret in SECRETS:
        assert secret not in done.stdout + done.stderr


def test_the_command_writes_yaml_to_a_file(project: Path, validator: Draft7Validator) -> None:
    out = project / "asyncapi.yaml"
    done = loafer(
        "asyncapi",
        "app:manager",
        "--format",
        "yaml",
        "--output",
        str(out),
        "--title",
        "Orders",
        "--version",
        "3.1.4",
        cwd=project,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    doc = yaml.safe_load(out.read_text())
    assert errors_of(validator, doc) == []
    assert doc["info"] == {**doc["info"], "title": "Orders", "version": "3.1.4"}


def test_the_command_reads_a_config_file(tmp_path: Path, validator: Draft7Validator) -> None:
    (tmp_path / "handlers.py").write_text(
        textwrap.dedent(
            """
            import pydantic

            class Job(pydantic.BaseModel):
                id: int

            async def handle(job: Job, metadata):
                pass
            """
        )
    )
    (tmp_path / "loafer.toml").write_text(
        textwrap.dedent(
            """
            [[routes]]
            name = "jobs"
            provider = "memory"
            queue = "jobs"
            handler = "handlers:handle"

            [[routes]]
            name = "orders"
            provider = "rabbit"
            queue = "orders"
            handler = "handlers:handle"
            provider_options = { url = "amqp://guest:cfg-5ecret@127.0.0.1:1/" }
            """
        )
    )
    done = loafer("asyncapi", cwd=tmp_path)  # loafer.toml found in the directory
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert errors_of(validator, doc) == []
    assert set(doc["channels"]) == {"jobs", "orders"}
    assert doc["channels"]["jobs"]["messages"]["Job"]["payload"] == {
        "$ref": "#/components/schemas/Job"
    }
    assert "cfg-5ecret" not in done.stdout
    assert doc["info"]["title"] == tmp_path.name  # the project's directory


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nosuchmodule:routes"], "cannot import module 'nosuchmodule'"),
        (["small:missing"], "has no attribute 'missing'"),
        (["small:not_routes"], "expected a Manager"),
        (["small:routes", "--config", "loafer.toml"], "not both"),
        (["small:routes", "--output", "no/such/dir/out.json"], "--output"),
    ],
)
def test_a_bad_target_exits_78_with_the_reason(
    project: Path, args: list[str], expected: str
) -> None:
    done = loafer("asyncapi", *args, cwd=project, env=_env())
    assert done.returncode == 78, done.stderr
    assert "loafer: error:" in done.stderr
    assert expected in done.stderr
    assert done.stdout == ""
