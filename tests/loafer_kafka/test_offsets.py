"""The per-partition bookkeeping: commit only up to the lowest unsettled offset."""

from __future__ import annotations

import random

import pytest

from loafer_kafka._offsets import Offsets


def test_nothing_handed_out_commits_nothing() -> None:
    assert Offsets().to_commit() is None


def test_the_first_offset_in_hand_is_committable_at_once() -> None:
    offsets = Offsets()
    offsets.add(7)
    assert offsets.to_commit() == 7  # resuming there loses nothing
    assert offsets.pending == 1


def test_out_of_order_settles_wait_for_the_lowest() -> None:
    offsets = Offsets()
    for n in range(5):
        offsets.add(n)
    assert not offsets.done(3)
    assert not offsets.done(1)
    assert offsets.to_commit() == 0
    assert offsets.done(0)
    assert offsets.to_commit() == 2  # 1 settled too; 2 still in hand
    assert offsets.done(2)
    assert offsets.to_commit() == 4
    assert offsets.done(4)
    assert offsets.to_commit() == 5
    assert offsets.pending == 0


def test_gaps_between_offsets_are_skipped() -> None:
    offsets = Offsets()
    for n in (10, 12, 20):  # compacted away or transaction markers in between
        offsets.add(n)
    offsets.done(12)
    offsets.done(10)
    assert offsets.to_commit() == 20
    offsets.done(20)
    assert offsets.to_commit() == 21


def test_a_second_settle_and_unknown_offsets_change_nothing() -> None:
    offsets = Offsets()
    offsets.add(0)
    offsets.add(1)
    offsets.done(1)
    assert not offsets.done(1)
    assert not offsets.done(99)
    assert not offsets.done(-1)
    assert offsets.pending == 1
    assert offsets.to_commit() == 0


def test_a_commit_is_not_repeated() -> None:
    offsets = Offsets()
    offsets.add(0)
    offsets.done(0)
    assert offsets.to_commit() == 1
    offsets.mark_committed(1)
    assert offsets.to_commit() is None
    offsets.mark_committed(0)  # an older commit answering late does not move it back
    assert offsets.committed == 1


def test_offsets_must_rise() -> None:
    offsets = Offsets()
    offsets.add(5)
    with pytest.raises(ValueError, match="after 5"):
        offsets.add(5)


def test_random_settle_order_never_commits_past_one_in_hand() -> None:
    rng = random.Random(23)
    offsets = Offsets()
    numbers = list(range(0, 2000, 2))
    for n in numbers:
        offsets.add(n)
    in_hand = set(numbers)
    rng.shuffle(numbers)
    for n in numbers:
        offsets.done(n)
        in_hand.discard(n)
        safe = offsets.to_commit()
        assert safe is not None
        assert all(safe <= m for m in in_hand)
    assert offsets.to_commit() == 1999
