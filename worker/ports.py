"""The worker's edges as small Protocols, and in-memory fakes of each for unit tests.

The pipeline sees only these; Kafka, Redis and HTTP live in adapters (kafka_io, redis_cache,
fetch) that are contract-tested against the same assertions as the fakes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from worker.adapters.fetch import FetchError


# Kafka headers as the client gives them: (name, value) pairs in order, a name may repeat.
Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True)
class Record:
    """One consumed message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()  # carried from the input (worker.headers)


TopicPartition = tuple[str, int]
# Called when partitions are revoked; returns, per partition, the offset to read again from if
# the partition is handed back (its unfinished messages were abandoned).
RevokeCallback = Callable[[set[TopicPartition]], dict[TopicPartition, int]]


class ReferenceSource(Protocol):
    def poll(self, timeout_s: float, max_records: int) -> list[Record]: ...

    def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        """Commit, per partition, the offset of the next message to read. False if the commit
        was dropped (membership lost, coordinator away): those messages will be replayed."""

    def assignment(self) -> set[TopicPartition]: ...

    def lag(self) -> dict[TopicPartition, int]: ...

    def pause(self) -> None:
        """Stop returning records (polling goes on, to stay in the group) until resume()."""

    def resume(self) -> None: ...

    def close(self) -> None: ...


class VerdictSink(Protocol):
    def publish(self, messages: list[Outgoing]) -> None:
        """Send and wait for every acknowledgement; raise if any message was not accepted."""


class VerdictCache(Protocol):
    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        """One round trip; missing keys are absent. Never raises: an outage is all misses."""

    def set_many(self, items: dict[str, bytes]) -> None:
        """One round trip; an outage drops the writes."""


class Fetcher(Protocol):
    def fetch(self, uri: str) -> bytes:
        """The bytes at `uri`, or FetchError for what is wrong with this reference (anything
        else raised is a fault of the worker's and stops it)."""


# -- fakes ---------------------------------------------------------------------------------------
class MemorySource:
    """Partitioned in-memory topic with committed offsets, a stand-in for one consumer."""

    def __init__(self, topic: str, partitions: int = 1) -> None:
        self.topic = topic
        self.logs: dict[int, list[Record]] = {p: [] for p in range(partitions)}
        self.positions = {p: 0 for p in range(partitions)}
        self.committed: dict[TopicPartition, int] = {}
        self.commit_calls: list[dict[TopicPartition, int]] = []
        self.paused = False

    def append(self, value: bytes | None, key: bytes | None = None, partition: int = 0,
               headers: Headers = ()) -> None:
        log = self.logs[partition]
        log.append(Record(self.topic, partition, len(log), key, value, tuple(headers)))

    def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        out: list[Record] = []
        if self.paused:
            return out
        for p, log in self.logs.items():
            take = log[self.positions[p] : self.positions[p] + max_records - len(out)]
            self.positions[p] += len(take)
            out.extend(take)
        return out

    def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        self.commit_calls.append(dict(offsets))
        self.committed.update(offsets)
        return True

    def assignment(self) -> set[TopicPartition]:
        return {(self.topic, p) for p in self.logs}

    def lag(self) -> dict[TopicPartition, int]:
        return {(self.topic, p): len(log) - self.positions[p] for p, log in self.logs.items()}

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def close(self) -> None:
        pass


class MemorySink:
    def __init__(self) -> None:
        self.messages: list[Outgoing] = []
        self.fail_next = 0  # make the next N publish calls raise, to test crash safety

    def publish(self, messages: list[Outgoing]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("broker unavailable (simulated)")
        self.messages.extend(messages)

    def on(self, topic: str) -> list[Outgoing]:
        return [m for m in self.messages if m.topic == topic]


class MemoryCache:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.round_trips = 0
        self.down = False

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        self.round_trips += 1
        return {} if self.down else {k: self.data[k] for k in keys if k in self.data}

    def set_many(self, items: dict[str, bytes]) -> None:
        self.round_trips += 1
        if not self.down:
            self.data.update(items)


class MemoryFetcher:
    def __init__(self, blobs: dict[str, bytes], errors: dict[str, Exception] | None = None):
        self.blobs = blobs
        self.errors = errors or {}
        self.calls: list[str] = []

    def fetch(self, uri: str) -> bytes:
        self.calls.append(uri)
        if uri in self.errors:
            raise self.errors[uri]
        if uri not in self.blobs:
            raise FetchError("not_found", f"{uri} does not exist")
        return self.blobs[uri]

