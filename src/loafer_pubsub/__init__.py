"""Google Cloud Pub/Sub provider plugin for loafer-core, over the REST API with
gcloud-aio-auth's credentials (the ``pubsub`` extra: gcloud-aio-pubsub).

``from loafer_pubsub import PubSubProvider, PubSubPublisher, PubSubRoute`` (and their
settings objects, ``PubSubSettings`` and ``PubSubPublisherSettings``:
:mod:`loafer_pubsub.settings`)
"""

from __future__ import annotations

from loafer_pubsub.provider import (
    ORIGINAL_MESSAGE_ID_ATTRIBUTE,
    REJECT_REASON_ATTRIBUTE,
    REJECTED_FROM_ATTRIBUTE,
    PubSubProvider,
)
from loafer_pubsub.publisher import PubSubPublisher
from loafer_pubsub.route import PubSubRoute
from loafer_pubsub.settings import (
    Endpoint,
    PubSubPublisherSettings,
    PubSubSettings,
    SubscriptionSetup,
)

__all__ = [
    "ORIGINAL_MESSAGE_ID_ATTRIBUTE",
    "REJECTED_FROM_ATTRIBUTE",
    "REJECT_REASON_ATTRIBUTE",
    "Endpoint",
    "PubSubProvider",
    "PubSubPublisher",
    "PubSubPublisherSettings",
    "PubSubRoute",
    "PubSubSettings",
    "SubscriptionSetup",
]
