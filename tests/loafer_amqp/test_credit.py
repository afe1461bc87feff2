"""The receiver's credit policy (:mod:`loafer_amqp._credit`), without a broker."""

from __future__ import annotations

import logging

import pytest

from loafer_amqp._credit import CreditGate

pytestmark = pytest.mark.amqp


def test_grants_every_free_slot_once_the_credit_has_drained() -> None:
    gate = CreditGate(10, "t")
    assert gate.grant(credit=0, unsettled=0) == 10  # start: the whole capacity
    assert gate.grant(credit=0, unsettled=7) == 3  # drained: all the free slots at once
    assert gate.grant(credit=0, unsettled=10) == 0  # full


def test_never_grants_while_credit_is_outstanding() -> None:
    """A flow sent while deliveries may be in flight inside the broker is over-granted by
    RabbitMQ 3.10: no top-up until the link's credit is zero."""
    gate = CreditGate(10, "t")
    assert gate.grant(credit=1, unsettled=0) == 0
    assert gate.grant(credit=9, unsettled=1) == 0


def test_after_deliveries_beyond_the_credit_nothing_until_they_are_settled() -> None:
    gate = CreditGate(10, "t")
    # 13 unsettled on a credit of -3: the broker sent 3 too many
    assert gate.grant(credit=-3, unsettled=13) == 0
    assert gate.grant(credit=-3, unsettled=10) == 0
    # settled down to 8: the link's credit goes from -3 to exactly the 2 free slots
    assert gate.grant(credit=-3, unsettled=8) == 5


def test_deliveries_beyond_the_credit_are_counted_and_warned_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    gate = CreditGate(10, "receiver:q", warn_every=60.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="loafer_amqp")
    gate.received(credit=0)  # the last one of the credit: fine
    assert gate.beyond_credit == 0 and not caplog.records
    for _ in range(500):
        gate.received(credit=-1)
    assert gate.beyond_credit == 500
    [first] = caplog.records  # one warning, not 500
    assert "sent 1 deliveries beyond the credit" in first.getMessage()
    now[0] += 61
    gate.received(credit=-2)
    assert len(caplog.records) == 2
    assert "sent 500 deliveries beyond the credit" in caplog.records[1].getMessage()
