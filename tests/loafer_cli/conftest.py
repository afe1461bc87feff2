"""The brokers' fixtures, for the ``loafer`` command's tests."""

from tests.loafer_amqp.conftest import amqp_url  # noqa: F401 - fixtures
from tests.loafer_rabbit.conftest import admin, rabbit_url  # noqa: F401
from tests.loafer_sqs.conftest import (  # noqa: F401
    client_options,
    make_queue,
    sqs,
    sqs_endpoint,
)
