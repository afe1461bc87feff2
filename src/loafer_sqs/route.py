"""Loafer-compatible routes: ``SQSRoute`` and ``SNSQueueRoute``.

Same signature as Loafer 2.x's ``loafer.ext.aws.routes``::

    SQSRoute('my-queue', {'options': {'WaitTimeSeconds': 3}, 'endpoint_url': ...},
             handler=..., error_handler=..., name=...)

``provider_options`` are :class:`~loafer_sqs.SQSProvider`'s keyword arguments (Loafer's
``options``, ``endpoint_url``, ``use_ssl``, plus ``region_name``, credentials,
``dead_letter_queue``...). Any other keyword (``max_concurrency``, ``handler_timeout``,
``max_attempts``, ``retry``) goes to :class:`loafer_core.route.Route`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loafer_core.errors import ConfigurationError
from loafer_core.route import Route
from loafer_sqs.provider import SQSProvider
from loafer_sqs.translator import SNSMessageTranslator, SQSMessageTranslator

__all__ = ["SNSQueueRoute", "SQSRoute"]

_DEFAULT: Any = object()


def _provider(queue: str, provider_options: Mapping[str, Any] | None) -> SQSProvider:
    if provider_options is not None and not isinstance(provider_options, Mapping):
        raise ConfigurationError(
            f"provider_options: expected a dict of SQSProvider options, got "
            f"{type(provider_options).__name__}"
        )
    options = dict(provider_options or {})
    if "queue_name" in options or "queue" in options:
        raise ConfigurationError("provider_options: give the queue as the first argument only")
    return SQSProvider(queue, **options)


class SQSRoute(Route):
    """A route consuming an SQS queue with JSON bodies (:class:`SQSMessageTranslator`).

    ``message_translator=None`` hands the handler the raw SQS message dict.
    """

    def __init__(
        self,
        queue: str,
        provider_options: Mapping[str, Any] | None = None,
        *,
        handler: Any,
        name: str | None = None,
        message_translator: Any = _DEFAULT,
        error_handler: Any = None,
        **route_options: Any,
    ) -> None:
        if message_translator is _DEFAULT:
            message_translator = self.default_message_translator()
        super().__init__(
            _provider(queue, provider_options),
            handler,
            name=name or queue,
            message_translator=message_translator,
            error_handler=error_handler,
            **route_options,
        )

    def default_message_translator(self) -> Any:
        """The translator used when none is given."""
        return SQSMessageTranslator()


class SNSQueueRoute(SQSRoute):
    """A route consuming an SQS queue subscribed to an SNS topic
    (:class:`SNSMessageTranslator`: the envelope is unwrapped, raw delivery works too)."""

    def default_message_translator(self) -> Any:
        """The translator used when none is given."""
        return SNSMessageTranslator()
