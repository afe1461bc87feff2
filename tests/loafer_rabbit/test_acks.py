"""Unit tests of the ack coalescing logic (no broker needed)."""

from __future__ import annotations

import pytest

from loafer_rabbit._acks import AckTracker

pytestmark = pytest.mark.rabbit


def tracker(*tags: int) -> AckTracker:
    acks = AckTracker()
    for tag in tags:
        acks.delivered(tag)
    return acks


def test_in_order_acks_become_one_multiple_ack() -> None:
    acks = tracker(1, 2, 3, 4, 5)
    assert acks.plan([1, 2, 3]) == (3, [])
    assert len(acks) == 2
    assert acks.plan([4, 5]) == (5, [])
    assert len(acks) == 0


def test_a_tag_still_outstanding_stops_the_multiple_ack() -> None:
    acks = tracker(1, 2, 3, 4)
    # 1 is still being handled: 2 and 4 must be acked one by one.
    assert acks.plan([2, 4]) == (None, [2, 4])
    # Once 1 is acked, the multiple ack may cover 1..2 (2 already acked is not outstanding
    # at the broker any more) and stops before 3.
    assert acks.plan([1]) == (1, [])
    assert acks.plan([3]) == (3, [])
    assert len(acks) == 0


def test_tags_settled_otherwise_are_skipped_over() -> None:
    acks = tracker(1, 2, 3)
    acks.settled(1)  # nacked on its own
    acks.settled(2)  # rejected on its own
    assert acks.plan([3]) == (3, [])
    assert len(acks) == 0


def test_a_multiple_ack_never_covers_an_outstanding_tag() -> None:
    acks = tracker(*range(1, 11))
    assert acks.plan([1, 2, 3, 5, 6]) == (3, [5, 6])
    assert acks.plan([7, 4]) == (7, [])  # 4..7: 5 and 6 were acked singly already
    assert acks.plan([10]) == (None, [10])
    assert acks.plan([8, 9]) == (9, [])  # 10, acked singly, is skipped over
    assert len(acks) == 0


def test_unknown_tags_are_acked_singly() -> None:
    acks = tracker(5, 6)
    assert acks.plan([1]) == (None, [1])
