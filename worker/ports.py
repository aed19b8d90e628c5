"""What the pipeline needs of the world, as small Protocols, and the plain records they pass.

The pipeline sees only these. Kafka, Redis and image fetching live in worker.adapters, the model
in detector.service.Detector; worker.testing holds in-memory fakes of each port, and
tests/test_contracts.py runs the same assertions against each fake and its real adapter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

if TYPE_CHECKING:  # annotations only: the ports do not load torch or Pillow
    from PIL import Image

    from detector.service import Score

# Stable values of FetchError.kind, so metrics can be labelled (and pre-registered) by reason,
# and dead letters' error kinds (fetch_<kind>) are a closed set (worker/schemas/).
FETCH_ERROR_KINDS = frozenset({
    "bad_uri", "unsupported_scheme", "outside_roots", "not_found", "not_a_file", "read_error",
    "dns_error", "blocked_address", "too_large", "timeout", "connection_error", "tls_error",
    "http_error", "bad_response", "bad_redirect", "too_many_redirects", "s3_unavailable",
    "s3_error",
})


class FetchError(Exception):
    """A reference could not be fetched. `kind` is one of FETCH_ERROR_KINDS; `transient` says
    whether trying again later may help; `attempts` is how many tries were made."""

    def __init__(self, kind: str, message: str, *, transient: bool = False,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.transient = transient
        self.status = status  # HTTP status, for kind == "http_error"
        self.attempts = 1


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


class Judge(Protocol):
    """The model, as the pipeline uses it (detector.service.Detector is the real one)."""

    @property
    def version(self) -> str:
        """The model version written into verdicts and cache keys."""

    @property
    def digest(self) -> str:
        """The bundle's digest: part of the cache keys, so another model's scores never match."""

    @property
    def threshold(self) -> float: ...

    @property
    def decode_side(self) -> int:
        """The short side images may be reduced to at decode without changing the scores."""

    def prepare(self, image: Image.Image) -> Mapping[Any, Any]:
        """The decoded image made into the model's inputs (each value has `nbytes`, counted
        against the in-flight bound); all the pipeline keeps of its pixels. Runs in the fetch
        pool's threads, so that the loop's thread only batches and runs the forward."""

    def predict_prepared(self, prepared: Sequence[Mapping[Any, Any]]) -> Sequence[Score]:
        """One Score per prepared image, in order; an exception fails the whole batch."""
