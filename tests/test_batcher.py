"""The micro-batcher: size or timeout, one result per item, errors reach the whole batch."""
from __future__ import annotations

import pytest

from detector.batcher import BatchPolicy, MicroBatcher


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_leaves_when_full():
    calls = []
    b = MicroBatcher(lambda xs: calls.append(list(xs)) or [x * 2 for x in xs], BatchPolicy(3, 10))
    assert b.submit(1) == [] and b.submit(2) == []
    done = b.submit(3)
    assert [(d.item, d.result) for d in done] == [(1, 2), (2, 4), (3, 6)]
    assert calls == [[1, 2, 3]] and len(b) == 0


def test_leaves_when_oldest_waited_long_enough():
    clock = Clock()
    b = MicroBatcher(lambda xs: list(xs), BatchPolicy(10, 0.05), clock)
    assert b.seconds_until_due() is None
    b.submit("a")
    clock.t += 0.03
    b.submit("b")
    assert b.seconds_until_due() == pytest.approx(0.02)
    assert b.poll() == []
    clock.t += 0.02
    assert [d.item for d in b.poll()] == ["a", "b"]
    assert b.seconds_until_due() is None


def test_error_reaches_every_item():
    def boom(xs):
        raise RuntimeError("cuda out of memory")

    b = MicroBatcher(boom, BatchPolicy(2, 1))
    b.submit(1)
    done = b.submit(2)
    assert [d.item for d in done] == [1, 2]
    assert all(isinstance(d.error, RuntimeError) and d.result is None for d in done)


def test_wrong_number_of_results_is_an_error_for_all():
    b = MicroBatcher(lambda xs: [0], BatchPolicy(5, 1))
    b.submit(1)
    b.submit(2)
    assert all("returned 1 results for 2 items" in str(d.error) for d in b.flush())


def test_flush_and_discard():
    b = MicroBatcher(lambda xs: list(xs), BatchPolicy(10, 1))
    assert b.flush() == []
    for i in range(5):
        b.submit(i)
    assert b.discard(lambda x: x % 2 == 0) == [1, 3]
    assert [d.item for d in b.flush()] == [0, 2, 4]


def test_policy_validation():
    with pytest.raises(ValueError):
        BatchPolicy(0, 1)
    with pytest.raises(ValueError):
        BatchPolicy(1, -1)
