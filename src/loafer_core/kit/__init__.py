"""The plugin kit: what every broker plugin needs at its edge, written once.

- **Secrets** (:mod:`loafer_core.kit._secrets`): :func:`mask_url`, :func:`secrets_of`,
  :func:`scrub` and :func:`check_url` over a plugin's :class:`UrlRules` (its schemes,
  which query parameters or options are secret), :func:`mask_text` over
  :class:`TextRules` for libraries that log credentials as ``name=value``; one
  :data:`MASK`.
- **Logs**: :func:`protect` installs the one :class:`SecretFilter` (an instance per
  plugin's rules, process-wide) on the library's loggers and the plugin's.
- **Errors**: :class:`map_exceptions` maps the library's exceptions to loafer-core's at
  the edge; :class:`~loafer_core.errors.PublishRefused` is what a publisher raises when
  the broker refuses a message.
- **Descriptions**: :class:`~loafer_core.provider.Describable` and
  :class:`~loafer_core.provider.Description` (re-exported here): what ``loafer asyncapi``
  and tracing read of a provider or publisher.

- **Batches**: :class:`Batcher` gathers entries (settlements, publishes) into batch
  calls within a linger, with bounded concurrency, per-entry retries and a bounded
  :meth:`Batcher.abort` for close.
- **Bodies**: :func:`encode_body`, what a publisher sends of a ``bytes``, ``str`` or
  JSON-serialisable body.
- **Routes**: :class:`ProviderRoute`, the route of a plugin that builds its provider
  from the route's keywords (a plugin's ``route.py`` is a subclass of a few lines).
- **Delayed publish** (:mod:`loafer_core._schedule`): :func:`due_in` and
  :func:`check_delay` turn ``delay=``/``at=`` into a checked :class:`DelayedPublish`;
  :class:`DelayingPublisher` and :func:`not_before` emulate it with the
  :data:`NOT_BEFORE` header where the broker cannot hold a message back.
- **Settings**: :mod:`loafer_core.settings` (frozen dataclasses, the shared
  ``Connection`` and ``Timeouts``, the flat-keyword adapter ``from_flat``).

``docs/writing-a-provider.md`` shows them in use.
"""

from __future__ import annotations

from loafer_core._schedule import (
    NOT_BEFORE,
    DelayedPublish,
    DelayingPublisher,
    check_delay,
    due_in,
    not_before,
)
from loafer_core.errors import PublishRefused
from loafer_core.kit._batch import Batcher, Batching, Failure, SendBatch
from loafer_core.kit._body import encode_body
from loafer_core.kit._edge import map_exceptions
from loafer_core.kit._logs import SecretFilter, protect, secret_filter
from loafer_core.kit._route import ProviderRoute
from loafer_core.kit._secrets import (
    MASK,
    TextRules,
    UrlRules,
    check_url,
    host_of,
    is_clean,
    mask_text,
    mask_url,
    scrub,
    secrets_of,
    with_port,
)
from loafer_core.provider import Describable, Description, PublisherLifecycle, Server

__all__ = [
    "MASK",
    "NOT_BEFORE",
    "Batcher",
    "Batching",
    "DelayedPublish",
    "DelayingPublisher",
    "Describable",
    "Description",
    "Failure",
    "ProviderRoute",
    "PublishRefused",
    "PublisherLifecycle",
    "SecretFilter",
    "SendBatch",
    "Server",
    "TextRules",
    "UrlRules",
    "check_delay",
    "check_url",
    "due_in",
    "encode_body",
    "host_of",
    "is_clean",
    "map_exceptions",
    "mask_text",
    "mask_url",
    "not_before",
    "protect",
    "scrub",
    "secret_filter",
    "secrets_of",
    "with_port",
]
