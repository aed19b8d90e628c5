"""A size-or-timeout micro-batcher with no I/O and no threads.

Items wait until the batch holds `max_batch` of them or its oldest item has waited `max_wait_s`;
then the batch function runs once over the whole list and must return one result per item. If it
raises (or returns the wrong number of results), every item of that batch gets the error. Time is
read from an injected clock, so the policy is tested without sleeping; the caller asks
`seconds_until_due()` to know how long it may block on other work (a Kafka poll, say).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BatchPolicy:
    max_batch: int = 32
    max_wait_s: float = 0.05

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {self.max_wait_s}")


@dataclass(frozen=True)
class Done(Generic[T, R]):
    item: T
    result: R | None = None
    error: BaseException | None = None


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R]],
        policy: BatchPolicy = BatchPolicy(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run_batch = run_batch
        self.policy = policy
        self._clock = clock
        self._pending: list[T] = []
        self._oldest_at: float | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def submit(self, item: T) -> list[Done[T, R]]:
        """Queue one item; returns the finished batch if this item filled it, else []."""
        if not self._pending:
            self._oldest_at = self._clock()
        self._pending.append(item)
        if len(self._pending) >= self.policy.max_batch:
            return self.flush()
        return []

    def seconds_until_due(self) -> float | None:
        """How long until the pending batch must leave; None when nothing is pending."""
        if self._oldest_at is None:
            return None
        return max(0.0, self._oldest_at + self.policy.max_wait_s - self._clock())

    def poll(self) -> list[Done[T, R]]:
        """Run the pending batch if its oldest item has waited long enough."""
        due = self.seconds_until_due()
        return self.flush() if due is not None and due <= 0 else []

    def flush(self) -> list[Done[T, R]]:
        """Run whatever is pending now, full or not."""
        batch, self._pending, self._oldest_at = self._pending, [], None
        if not batch:
            return []
        try:
            results = list(self._run_batch(batch))
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batch function returned {len(results)} results for {len(batch)} items"
                )
        except Exception as exc:  # the error belongs to every item of the batch
            return [Done(item, error=exc) for item in batch]
        return [Done(item, result=r) for item, r in zip(batch, results)]

    def discard(self, keep: Callable[[T], bool]) -> list[T]:
        """Drop pending items for which keep() is false (a revoked partition's); returns them."""
        dropped = [i for i in self._pending if not keep(i)]
        self._pending = [i for i in self._pending if keep(i)]
        if not self._pending:
            self._oldest_at = None
        return dropped
