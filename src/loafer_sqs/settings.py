"""Settings objects of the SQS plugin: :class:`SQSSettings` (the provider's),
:class:`SQSPublisherSettings` and :class:`SNSPublisherSettings`, frozen dataclasses
checked when built.

``SQSProvider(SQSSettings(queue="orders", client=AWSClient(region_name="eu-west-1")))``
and Loafer 2.x's ``SQSProvider("orders", {"WaitTimeSeconds": 5}, region_name=
"eu-west-1")`` build the same provider: the flat keywords are mapped onto these fields
(:attr:`SQSSettings.flat`). The pieces: :class:`AWSClient` (region, endpoint,
credentials, botocore ``config``: its ``repr`` never shows a credential),
:class:`Lingers` and :class:`Closing`.
"""

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiobotocore.config import AioConfig

from loafer_core.settings import Check, Settings, optional, setting
from loafer_core.settings import settings_of as _settings_of
from loafer_core.typed import TYPE_HEADER
from loafer_sqs._closing import DEFAULT_CLOSE_TIMEOUT
from loafer_sqs.errors import mask

__all__ = [
    "MAX_VISIBILITY",
    "RECEIVE_OPTIONS",
    "AWSClient",
    "Closing",
    "Lingers",
    "SNSPublisherSettings",
    "SQSPublisherSettings",
    "SQSSettings",
]

#: SQS's ceiling for a message's visibility: 12 hours from when it was received.
MAX_VISIBILITY = 43_200
#: The most messages one ReceiveMessage (and one batch call) takes.
_MAX_BATCH = 10
#: The ``ReceiveMessage`` options a provider takes (Loafer's ``options`` dict).
RECEIVE_OPTIONS = frozenset(
    {
        "WaitTimeSeconds",
        "MaxNumberOfMessages",
        "VisibilityTimeout",
        "AttributeNames",
        "MessageSystemAttributeNames",
        "MessageAttributeNames",
    }
)


# -- checks ---------------------------------------------------------------------------


def _number_from(minimum: float, maximum: float = math.inf) -> Check:
    shown = (
        f"a number >= {minimum:g}"
        if maximum == math.inf
        else (f"seconds from {minimum:g} to {maximum:g}")
    )

    def check(value: Any) -> str | None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not minimum <= value <= maximum
        ):
            return shown
        return None

    return check


def _queue(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "a queue name or URL"


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _receive_options(value: Any) -> str | None:
    """Loafer's ``options`` dict: known keys, each of the type and range SQS takes."""
    if not isinstance(value, Mapping):
        return "a dict of ReceiveMessage options"
    unknown = sorted(set(value) - RECEIVE_OPTIONS)
    if unknown:
        allowed = sorted(RECEIVE_OPTIONS)
        return f"ReceiveMessage options only (unknown {unknown}; allowed: {allowed})"
    if not _whole(value.get("WaitTimeSeconds", 20), 0, 20):
        return "options['WaitTimeSeconds'] to be an int from 0 to 20"
    if not _whole(value.get("MaxNumberOfMessages", _MAX_BATCH), 1, _MAX_BATCH):
        return f"options['MaxNumberOfMessages'] to be an int from 1 to {_MAX_BATCH}"
    visibility = value.get("VisibilityTimeout")
    if visibility is not None and not _whole(visibility, 0, MAX_VISIBILITY):
        return f"options['VisibilityTimeout'] to be an int from 0 to {MAX_VISIBILITY}"
    for key in ("AttributeNames", "MessageSystemAttributeNames", "MessageAttributeNames"):
        names = value.get(key)
        if names is not None and (
            not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names)
        ):
            return f"options[{key!r}] to be a list of str (e.g. ['All'])"
    return None


# -- pieces ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class AWSClient(Settings):
    """Where and how the aiobotocore client connects; ``None`` leaves a value to the
    standard AWS chain (environment, profile, instance role).

    :param region_name: the AWS region.
    :param endpoint_url: another endpoint (LocalStack, moto, a VPC endpoint); shown
        masked.
    :param use_ssl: botocore's ``use_ssl``.
    :param verify: botocore's ``verify`` (``False``, or a CA bundle's path).
    :param aws_access_key_id: a credential (never shown).
    :param aws_secret_access_key: a credential (never shown).
    :param aws_session_token: a credential (never shown).
    :param profile_name: the AWS configuration profile.
    :param config: an ``AioConfig`` merged over the plugin's timeouts.
    :param session: an aiobotocore session of your own (its event handlers apply).
    """

    region_name: str | None = None
    endpoint_url: str | None = None
    use_ssl: bool | None = None
    verify: bool | str | None = None
    aws_access_key_id: str | None = setting(None, secret=True)
    aws_secret_access_key: str | None = setting(None, secret=True)
    aws_session_token: str | None = setting(None, secret=True)
    profile_name: str | None = None
    config: AioConfig | None = None
    session: Any = None

    def given(self) -> dict[str, Any]:
        """The options set (not ``None``), by name."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }

    def __repr__(self) -> str:
        shown = {
            k: v
            for k, v in self.given().items()
            if k in {"region_name", "endpoint_url", "use_ssl", "verify", "profile_name"}
        }
        if "endpoint_url" in shown:
            shown["endpoint_url"] = mask(shown["endpoint_url"])
        fields = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        secrets = [f.name for f in dataclasses.fields(self) if f.metadata.get("secret")]
        given = [name for name in secrets if getattr(self, name) is not None]
        more = [k for k in ("config", "session") if getattr(self, k) is not None]
        extra = f"credentials={given!r}" if given else ""
        extra += (", " if extra and more else "") + (f"also={more!r}" if more else "")
        return f"AWSClient({', '.join(p for p in (fields, extra) if p)})"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lingers(Settings):
    """How long work waits to be batched, in seconds (each a number >= 0).

    :param settle: settlements waiting to fill a batch call (flat: ``settle_linger``).
    :param receive: a receive of fewer than 10 waiting for more of the route's capacity
        to free up while it is busy (flat: ``receive_linger``).
    """

    settle: float = setting(0.02, check=_number_from(0))
    receive: float = setting(0.05, check=_number_from(0))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Closing(Settings):
    """What ``close()`` may spend, in seconds (each a number >= 0).

    :param grace: how long receives still in flight may finish (their messages are then
        released); one cut short may leave a message that was arriving just then
        invisible until its visibility timeout (flat: ``close_grace``).
    :param timeout: the most ``close()`` spends on that and on sending the settlements
        still queued; what is unsent then is given up, logged (flat: ``close_timeout``).
    """

    grace: float = setting(1.0, check=_number_from(0))
    timeout: float = setting(DEFAULT_CLOSE_TIMEOUT, check=_number_from(0))


#: The flat names of :class:`AWSClient`'s fields (``region_name``, ...).
_CLIENT_FLAT = {f.name: f"client.{f.name}" for f in dataclasses.fields(AWSClient)}


# -- the provider's and the publishers' settings ----------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class SQSSettings(Settings):
    """An :class:`~loafer_sqs.SQSProvider`'s settings: one SQS queue (standard or FIFO).

    :param queue: the queue's name or URL (the constructor takes ``queue_name=`` too, as
        Loafer did).
    :param receive_options: ``ReceiveMessage`` options, Loafer's ``options`` dict (flat:
        ``options``): ``WaitTimeSeconds`` (default 20: long polling, an int from 0 to 20),
        ``MaxNumberOfMessages`` (a cap per receive, 1 to 10), ``VisibilityTimeout`` (0 to
        43200), ``AttributeNames``, ``MessageSystemAttributeNames``,
        ``MessageAttributeNames`` (lists of str).
    :param dead_letter_queue: name or URL of the queue that ``REJECT`` sends to; by
        default the queue's RedrivePolicy target; ``False`` to never dead-letter.
    :param retry_visibility: visibility (seconds, 0 to 43200) set by a ``RETRY`` without a
        delay; ``None`` (default, Loafer's behaviour) leaves the message to its timeout.
    :param lingers: :class:`Lingers` (flat: ``settle_linger``, ``receive_linger``).
    :param closing: :class:`Closing` (flat: ``close_grace``, ``close_timeout``).
    :param client: :class:`AWSClient` (flat: its field names, ``region_name``,
        ``endpoint_url``, ``use_ssl``, ``verify``, ``aws_access_key_id``,
        ``aws_secret_access_key``, ``aws_session_token``, ``profile_name``, ``config``,
        ``session``).
    """

    primary = "queue"
    flat = {
        **_CLIENT_FLAT,
        "options": "receive_options",
        "settle_linger": "lingers.settle",
        "receive_linger": "lingers.receive",
        "close_grace": "closing.grace",
        "close_timeout": "closing.timeout",
    }

    queue: str = setting(check=_queue)
    receive_options: Mapping[str, Any] = setting(default_factory=dict, check=_receive_options)
    dead_letter_queue: str | bool | None = None
    retry_visibility: float | None = setting(None, check=optional(_number_from(0, MAX_VISIBILITY)))
    lingers: Lingers = Lingers()
    closing: Closing = Closing()
    client: AWSClient = AWSClient()


@dataclasses.dataclass(frozen=True, kw_only=True)
class _PublisherSettings(Settings):
    """What both publishers share."""

    flat = {**_CLIENT_FLAT}

    linger: float = setting(0.02, check=_number_from(0))
    encoder: Callable[[Any], str] = json.dumps
    close_timeout: float = setting(DEFAULT_CLOSE_TIMEOUT, check=_number_from(0))
    type_header: str | None = TYPE_HEADER
    client: AWSClient = AWSClient()


@dataclasses.dataclass(frozen=True, kw_only=True)
class SQSPublisherSettings(_PublisherSettings):
    """An :class:`~loafer_sqs.SQSPublisher`'s settings.

    :param queue: default queue (name or URL) for ``publish``.
    :param linger: how long a message waits for others to fill a batch (seconds >= 0).
    :param encoder: turns non-text bodies into text (default ``json.dumps``).
    :param close_timeout: the most ``close()`` spends sending what is queued (seconds
        >= 0).
    :param type_header: the message attribute a typed object's type is named in
        (``None``: none).
    :param client: :class:`AWSClient` (flat: its field names, as :class:`SQSSettings`).
    """

    primary = "queue"

    queue: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SNSPublisherSettings(_PublisherSettings):
    """An :class:`~loafer_sqs.SNSPublisher`'s settings: as :class:`SQSPublisherSettings`,
    with ``topic`` (the default topic ARN, or a name looked up with ``ListTopics``)
    instead of ``queue``."""

    primary = "topic"

    topic: str | None = None


S = TypeVar("S", bound=Settings)


def settings_of(
    settings_type: type[S], owner: str, settings: S | str | None, options: Mapping[str, Any]
) -> S:
    """Core's :func:`~loafer_core.settings.settings_of` (a ``str`` ``settings`` is the
    queue or topic)."""
    return _settings_of(settings_type, owner, settings, options)
