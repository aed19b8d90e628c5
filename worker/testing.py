"""In-memory fakes of the worker's ports, for tests and benchmarks only.

Each behaves like its real adapter where the pipeline can tell (tests/test_contracts.py runs the
same assertions against both) and adds hooks a test needs: `MemorySink.fail_next` (a broker
that refuses a publish), `MemoryCache.down` (an unreachable Redis), `MemorySource.positions` (a
restarted consumer), `FakeJudge(fail_with=...)` (a failed inference batch). No worker module
imports this one (tests/test_imports.py).
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from detector.service import Score, label_for
from worker.ports import FetchError, Headers, Outgoing, Record, TopicPartition

class MemorySource:
    """Partitioned in-memory topic with committed offsets, a stand-in for one consumer."""

    def __init__(self, topic: str, partitions: int = 1) -> None:
        self.topic = topic
        self.logs: dict[int, list[Record]] = {p: [] for p in range(partitions)}
        self.positions = {p: 0 for p in range(partitions)}
        self.committed: dict[TopicPartition, int] = {}
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
    """Publishes into a list; `on(topic)` reads a topic back."""

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
    """A dict; while `down`, all misses and dropped writes, as an unreachable Redis."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.down = False

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        return {} if self.down else {k: self.data[k] for k in keys if k in self.data}

    def set_many(self, items: dict[str, bytes]) -> None:
        if not self.down:
            self.data.update(items)


class MemoryFetcher:
    """Serves `blobs` by URI; `errors[uri]` is raised instead; any other URI is not_found."""

    def __init__(self, blobs: dict[str, bytes], errors: dict[str, Exception] | None = None):
        self.blobs = blobs
        self.errors = errors or {}

    def fetch(self, uri: str) -> bytes:
        if uri in self.errors:
            raise self.errors[uri]
        if uri not in self.blobs:
            raise FetchError("not_found", f"{uri} does not exist")
        return self.blobs[uri]


class FakeJudge:
    """A model with fixed, reproducible answers: each expert's P(fake) is derived from a digest
    of the image's pixels, so identical pictures score alike and different ones (nearly always)
    do not. Its prepared inputs are the image's own pixels (as many bytes as the decoded image).
    `fail_with` makes every prediction raise it, as a CUDA out-of-memory would."""

    def __init__(self, experts: Sequence[str] = ("a", "b"), threshold: float = 0.5,
                 version: str = "fake-judge", fail_with: Exception | None = None) -> None:
        self.experts, self.threshold, self.version = tuple(experts), threshold, version
        self.digest = hashlib.sha256(version.encode()).hexdigest()
        self.decode_side = 64
        self.fail_with = fail_with

    def prepare(self, image: Image.Image) -> dict[str, np.ndarray]:
        return {"pixels": np.array(image.convert("RGB"))}

    def predict_prepared(self, prepared: Sequence[Mapping[str, Any]]) -> list[Score]:
        if self.fail_with is not None:
            raise self.fail_with
        return [self._score(inputs["pixels"]) for inputs in prepared]

    def predict(self, images: Sequence[Image.Image]) -> list[Score]:
        return self.predict_prepared([self.prepare(image) for image in images])

    def _score(self, pixels: np.ndarray) -> Score:
        digest = hashlib.sha256(pixels.tobytes()).digest()
        probs = {name: digest[i] / 255 for i, name in enumerate(self.experts)}
        score = sum(probs.values()) / len(probs)
        spread = max(probs.values()) - min(probs.values())
        return Score(score, label_for(score, self.threshold, spread), probs, spread, self.version)
