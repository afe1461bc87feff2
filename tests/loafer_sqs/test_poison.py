"""The route's default retry backoff on SQS: not added where a plain RETRY already waits
out the visibility timeout (Loafer's behaviour), added with retry_visibility=0."""

from __future__ import annotations

from typing import Any

import pytest

from loafer_core import Route
from loafer_core.outcome import RETRY
from loafer_core.provider import Delivery
from loafer_sqs import SQSProvider

pytestmark = pytest.mark.sqs

URL = "http://127.0.0.1:1/123456789012/q"


@pytest.mark.parametrize(
    ("options", "outcome"), [({}, RETRY()), ({"retry_visibility": 0}, RETRY(1.0))]
)
async def test_a_failing_message_waits_once_whatever_the_settings(
    options: dict[str, Any], outcome: Any, client_options: dict[str, Any]
) -> None:
    async def handler(content: Any, metadata: Any) -> bool:
        raise ValueError("poison")

    route = Route(SQSProvider(URL, **options, **client_options), handler)
    route.check_capabilities(route.provider.capabilities)
    delivery = Delivery(raw={"Body": "1"}, message_id="m", attempt=1)
    assert await route.process(delivery) == outcome
