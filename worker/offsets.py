"""Which offsets may be committed: never past a message whose result is not yet acknowledged.

Kafka's committed offset means "everything before this is done". Messages finish out of order
(cache hits at once, misses after a batch, dead letters whenever they fail), so per partition we
keep the set of offsets still in flight; the committable offset is the lowest of them, or one past
the highest offset seen when none is in flight.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from worker.ports import TopicPartition


@dataclass
class _PartitionState:
    in_flight: set[int] = field(default_factory=set)
    highest_seen: int = -1
    first_seen: int | None = None
    committed: int | None = None


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _PartitionState] = {}

    def started(self, tp: TopicPartition, offset: int) -> None:
        state = self._parts.setdefault(tp, _PartitionState())
        state.in_flight.add(offset)
        if state.first_seen is None:
            state.first_seen = offset
        state.highest_seen = max(state.highest_seen, offset)

    def finished(self, tp: TopicPartition, offset: int) -> None:
        """The message's verdict or dead letter has been published and acknowledged."""
        self._parts[tp].in_flight.discard(offset)

    def in_flight(self) -> int:
        return sum(len(s.in_flight) for s in self._parts.values())

    def committable(self) -> dict[TopicPartition, int]:
        """Per partition, the offset to commit now, if it moves past the last commit."""
        out = {}
        for tp, state in self._parts.items():
            if state.highest_seen < 0:
                continue
            safe = min(state.in_flight) if state.in_flight else state.highest_seen + 1
            # Committing the offset we started from would say nothing new: skip it.
            floor = state.first_seen if state.committed is None else state.committed
            if safe > floor:
                out[tp] = safe
        return out

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._parts:
                self._parts[tp].committed = offset

    def resume_points(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Where to read again from, per partition, if its unfinished messages are abandoned."""
        return {tp: min(state.in_flight) for tp, state in self._parts.items()
                if tp in partitions and state.in_flight}

    def forget(self, partitions: set[TopicPartition]) -> None:
        """A revoked partition's state belongs to its next owner, who resumes from the commit."""
        for tp in partitions:
            self._parts.pop(tp, None)
