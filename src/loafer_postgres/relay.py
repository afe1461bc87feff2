"""The outbox relay: an ordinary route that forwards the outbox's rows to brokers.

Its provider is the ``postgres`` queue provider reading the outbox table (the queue is
the outbox's ``name``); its handler, :class:`Relay`, publishes each row to the publisher
its ``destination`` names, with the row's headers (its message id among them), through
the route's ``publish_to`` targets. The forwarding guarantee
(:mod:`loafer_core.forward`) is what makes it safe: the row is ACCEPTED, i.e. deleted,
only after the target broker confirmed the publish; a publish that failed or was not
confirmed RETRIES the row (the route's retry policy: 1 s doubling to a minute by
default, for ever unless ``max_attempts`` is set); a row naming a destination the relay
has no publisher for is REJECTED to ``<table>_dead`` with the reason.

Guarantees (the proofs are ``tests/loafer_postgres/test_relay.py`` and
``test_outbox_proofs.py``):

- **At least once, nothing lost**: a relay killed after a confirm and before the row's
  delete leaves the row leased; its lease lapses and the row is published again (a
  duplicate, carrying the same :data:`~loafer_postgres.outbox.MESSAGE_ID_HEADER`).
- **No row skipped**: the relay keeps no position (no "last id seen"): it leases what is
  in the table and deletes what it relayed. A row of a transaction still open when rows
  with higher ids were relayed (BIGSERIAL ids are taken before commit, so they commit
  out of order) is simply not visible yet, and is relayed once its transaction commits.
- **Order per key**: only the oldest row of a key still in the table can be leased, so a
  key's rows are relayed one at a time (across every relay process), each only after the
  previous one was confirmed and deleted. The order is the order of the rows' ids among
  the rows visible together; for one writer per key (a key's transactions do not
  overlap, e.g. each locks its aggregate's row first) that is the key's commit order.
  Two transactions writing the same key at the same time commit in an order nobody
  chose; the relay keeps whichever order their rows became visible in (a row of the
  one that committed first may go first although its id is higher);
  ``Outbox(serialize_keys=True)`` keeps such transactions from overlapping.
- **Several relays**: leases are taken with ``FOR UPDATE SKIP LOCKED``: run as many as
  you like; a key's rows still go one at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loafer_core.errors import ConfigurationError, RejectMessage
from loafer_core.forward import publish
from loafer_postgres.outbox import MESSAGE_ID_HEADER
from loafer_postgres.route import PostgresRoute
from loafer_postgres.schema import DEFAULT_OUTBOX_TABLE

__all__ = ["OutboxRelay", "Relay", "relay"]

OptionMap = str | Mapping[str, str] | None


def _option_map(owner: str, what: str, value: OptionMap) -> OptionMap:
    if value is None or (isinstance(value, str) and value):
        return value
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
    ):
        return dict(value)
    raise ConfigurationError(
        f"{owner}({what}=...): expected a publish keyword (str), or {{destination: keyword}}, "
        f"got {value!r}"
    )


def _option_for(value: OptionMap, destination: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.get(destination)


class Relay:
    """The relay's handler: publish an outbox row to the target its ``destination`` names.

    Arguments:
        key_option: the publish keyword that receives the row's ``key`` (``"key"`` for
            Kafka, ``"group_id"`` for an SQS FIFO queue, ...): one for every destination,
            or ``{destination: keyword}``; ``None``: the key is not passed on.
        id_option: the publish keyword that receives the row's message id (RabbitMQ's and
            AMQP 1.0's ``"message_id"``: the consumer's broker id is then the outbox's
            id); the id is always in the :data:`~loafer_postgres.outbox.MESSAGE_ID_HEADER`
            header too.
        key_header: a header to carry the row's key in (``None``: none).

    Give it (or the default :data:`relay`) as the handler of a route whose provider reads
    the outbox table and whose ``publish_to`` names the destinations; :class:`OutboxRelay`
    builds that route. The route gets the raw row (``translator=None``).
    """

    def __init__(
        self,
        *,
        key_option: OptionMap = None,
        id_option: OptionMap = None,
        key_header: str | None = None,
    ) -> None:
        self.key_option = _option_map("Relay", "key_option", key_option)
        self.id_option = _option_map("Relay", "id_option", id_option)
        if key_header is not None and (not isinstance(key_header, str) or not key_header):
            raise ConfigurationError(f"Relay(key_header=...): expected a name, got {key_header!r}")
        self.key_header = key_header

    def __repr__(self) -> str:
        return f"Relay(key_option={self.key_option!r}, id_option={self.id_option!r})"

    async def __call__(self, content: Any, metadata: Mapping[str, Any]) -> None:
        """Publish the row and wait for the confirm (the route then deletes the row)."""
        destination = metadata.get("destination")
        if not isinstance(destination, str) or not destination:
            raise RejectMessage(
                f"outbox row {metadata.get('message_id')} has no destination (not written by "
                "Outbox.publish?)"
            )
        headers = dict(metadata.get("headers") or {})
        options: dict[str, Any] = {}
        key = metadata.get("key")
        if key is not None:
            option = _option_for(self.key_option, destination)
            if option is not None:
                options[option] = key
            if self.key_header is not None:
                headers[self.key_header] = key
        message_id = headers.get(MESSAGE_ID_HEADER)
        option = _option_for(self.id_option, destination)
        if option is not None and message_id is not None:
            options[option] = message_id
        if not isinstance(content, bytes | bytearray | memoryview):
            # a translator decoded the row: its bytes would not be forwarded as written
            raise TypeError(
                "the relay route must hand the handler the row's raw body: give the route "
                "translator=None (translator = false in a config file); the row is retried"
            )
        body = bytes(content)
        try:
            await publish(body, to=destination, headers=headers, **options)
        except ConfigurationError as exc:  # no such target on the route: not retryable
            raise RejectMessage(
                f"outbox row {metadata.get('message_id')}: no publisher for destination "
                f"{destination!r} on this relay ({exc})"
            ) from None


relay = Relay()
"""The default relay handler (no key or id passed as publish options): what a config
file's relay route names, ``handler = "loafer_postgres.relay:relay"``."""


class OutboxRelay(PostgresRoute):
    """The relay route: the ``postgres`` provider on the outbox table, :class:`Relay` as
    its handler, ``publishers`` as its ``publish_to``.

    ``OutboxRelay({"orders": RabbitPublisher(url, routing_key="orders")},
    url="postgresql://app@db/app", max_concurrency=50)``

    Arguments:
        publishers: ``{destination: publisher}``: the names ``Outbox.publish`` writes as
            ``destination``.
        outbox: the outbox's name (``Outbox(name=...)``, the rows' ``queue``): "default".
        key_option: see :class:`Relay`.
        id_option: see :class:`Relay`.
        key_header: see :class:`Relay`.

    Every other keyword is the ``postgres`` provider's (``url``, ``table`` (the outbox
    table by default), ``schema``, ``lease``, ``batch_size``, ...) or the route's
    (``name``, ``max_concurrency``, ``max_attempts``, ``retry``, ``handler_timeout``,
    ``middleware``). Without ``max_attempts`` a row whose publish keeps failing is retried
    for ever (a target that is down loses nothing); with it, it goes to ``<table>_dead``.
    """

    def __init__(
        self,
        publishers: Mapping[str, Any],
        *,
        outbox: str = "default",
        key_option: OptionMap = None,
        id_option: OptionMap = None,
        key_header: str | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(publishers, Mapping) or not publishers:
            raise ConfigurationError(
                "OutboxRelay(publishers=...): expected {destination: publisher}, got "
                f"{publishers!r}"
            )
        for reserved in ("handler", "publish_to", "translator"):
            if reserved in options:
                raise ConfigurationError(
                    f"OutboxRelay({reserved}=...): the relay sets it (use Relay and a "
                    "PostgresRoute for a handler of your own)"
                )
        options.setdefault("table", DEFAULT_OUTBOX_TABLE)
        handler = Relay(key_option=key_option, id_option=id_option, key_header=key_header)
        super().__init__(
            outbox, handler=handler, publish_to=dict(publishers), translator=None, **options
        )

    def default_name(self, queue: str, provider: Any) -> str:
        """``outbox-relay:{table}/{outbox}``."""
        return f"outbox-relay:{provider.settings.table}/{queue}"
