"""One message on its way through the pipeline (a Job), and the expected failure that ends it
early (JobFailed, which becomes a dead letter).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from worker.cache_match import Fingerprint
from worker.headers import NOTHING, Carried
from worker.messages import ImageReference
from worker.ports import Record, TopicPartition


@dataclass
class Job:
    """One message on its way through the pipeline."""

    record: Record
    ref: ImageReference | None = None
    started: float = field(default_factory=time.monotonic)
    # The model's inputs (Judge.prepare of the decoded image): all that is kept of its pixels.
    inputs: Mapping[Any, Any] | None = None
    fingerprint: Fingerprint | None = None  # hashes, cache probes, signature of the decoded image
    cache_key: str = ""
    pixel_bytes: int = 0  # of `inputs`, counted against the in-flight bound while they are held
    followers: list["Job"] = field(default_factory=list)  # same pixels, in flight: one inference
    carried: Carried = NOTHING  # headers for its result, fields for its log lines

    @property
    def pixels(self) -> str:
        return self.fingerprint.pixels

    @property
    def tp(self) -> TopicPartition:
        return (self.record.topic, self.record.partition)


class JobFailed(Exception):
    def __init__(self, kind: str, message: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.kind, self.attempts = kind, attempts
