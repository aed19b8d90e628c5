"""The wire format: versioned JSON messages, validated with pydantic.

In:  ImageReference on the input topic (key = id).
Out: Verdict on the verdict topic (key = id); DeadLetter on the dead-letter topic, carrying the
original bytes even when they were not JSON, so nothing is lost.

The published contract is worker/schemas/*.v1.json (JSON Schema 2020-12; README, "Message
contract"): a field added, removed or retyped here must be declared there, or
tests/test_contract_schemas.py fails. `v` is the schema version of every message; an input
message may leave it out.
"""
from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1
# Dead-letter reasons of a message that cannot be understood; the others are fetch_<kind>
# (worker.ports.FETCH_ERROR_KINDS), decode_<kind> (detector.images) and inference_error.
MESSAGE_ERROR_KINDS = ("empty_message", "not_json", "invalid_message", "unsupported_version")


class MessageError(ValueError):
    """A message on the input topic that cannot be understood."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ImageReference(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] | None = None  # the schema version; a later one is not guessed at
    id: str = Field(min_length=1, max_length=512)
    uri: str = Field(min_length=1, max_length=4096)
    submitted_at: datetime | None = None
    attributes: dict[str, Any] | None = None


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    v: int = SCHEMA_VERSION
    id: str
    uri: str
    score: float
    label: Literal["ai_generated", "real", "uncertain"]
    threshold: float
    experts: dict[str, float]
    model_version: str
    phash: str
    sha256: str
    cached: bool  # the scores come from the verdict cache (cache says how it matched)
    cache: Literal["exact", "near"] | None = None  # exact: same bytes or pixels; near: re-encode
    duplicate_of: str | None = None  # id of the identical image judged at the same time
    latency_ms: float
    worker_id: str
    timestamp: datetime


class OriginalMessage(BaseModel):
    topic: str
    partition: int
    offset: int
    key: str | None
    value_b64: str  # the exact bytes received
    value_text: str | None  # the same bytes as text, when they are UTF-8


class DeadLetter(BaseModel):
    v: int = SCHEMA_VERSION
    id: str | None  # None when the message was too broken to name one
    uri: str | None
    error_kind: str
    error: str
    attempts: int
    original: OriginalMessage
    worker_id: str
    timestamp: datetime


def now() -> datetime:
    return datetime.now(timezone.utc)


def parse_reference(value: bytes | None) -> ImageReference:
    if value is None:
        raise MessageError("empty_message", "message has no value (tombstone?)")
    try:
        return ImageReference.model_validate_json(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise MessageError("not_json", f"message is not valid JSON: {first['msg']}") from exc
        where = ".".join(str(p) for p in first["loc"]) or "message"
        kind = "unsupported_version" if first["loc"][:1] == ("v",) else "invalid_message"
        raise MessageError(kind, f"{where}: {first['msg']}") from exc


def original_of(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None):
    raw = value or b""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return OriginalMessage(
        topic=topic, partition=partition, offset=offset,
        key=key.decode("utf-8", "replace") if key is not None else None,
        value_b64=base64.b64encode(raw).decode("ascii"), value_text=text,
    )
