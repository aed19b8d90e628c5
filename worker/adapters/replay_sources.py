"""Finite sources and sinks for replay jobs, behind the same ports the live worker uses.

A replay source knows its end when the job starts, so the job terminates; its `commit` writes a
checkpoint file, so an interrupted job resumes where it stopped (at-least-once, like the worker).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable

from detector.images import IMAGE_SUFFIXES
from worker.ports import Outgoing, Record, TopicPartition


@dataclass
class Checkpoint:
    """Progress of one replay job: its fixed plan (start/end per partition) and its commits."""

    path: Path
    plan: dict[str, object] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path, plan: dict[str, object]) -> "Checkpoint":
        if path.exists():
            saved = json.loads(path.read_text())
            if saved["plan"].get("source") != plan.get("source"):
                raise ValueError(f"{path} belongs to another replay ({saved['plan'].get('source')}); "
                                 "remove it or choose another --state")
            return cls(path, saved["plan"], saved["offsets"])
        return cls(path, plan, {})

    def save(self, offsets: dict[TopicPartition, int]) -> None:
        self.offsets.update({f"{t}:{p}": o for (t, p), o in offsets.items()})
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"plan": self.plan, "offsets": self.offsets}, indent=1))
        os.replace(tmp, self.path)

    def committed(self, topic: str, partition: int) -> int | None:
        return self.offsets.get(f"{topic}:{partition}")


class ListingSource:
    """References from a list of URIs: a file of URIs, a manifest, a folder, an S3 prefix."""

    topic = "listing"

    def __init__(self, refs: list[tuple[str, str]], checkpoint: Checkpoint) -> None:
        self.refs = refs
        self.checkpoint = checkpoint
        self.position = checkpoint.committed(self.topic, 0) or 0
        self.start = self.position
        self.paused = False

    def total(self) -> int:
        return len(self.refs)

    def exhausted(self) -> bool:
        return self.position >= len(self.refs)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        if self.paused:
            return []
        chunk = self.refs[self.position : self.position + max_records]
        records = [
            Record(self.topic, 0, self.position + i, ref_id.encode(),
                   json.dumps({"id": ref_id, "uri": uri}).encode())
            for i, (ref_id, uri) in enumerate(chunk)
        ]
        self.position += len(records)
        return records

    def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        self.checkpoint.save(offsets)
        return True

    def assignment(self) -> set[TopicPartition]:
        return {(self.topic, 0)}

    def lag(self) -> dict[TopicPartition, int]:
        return {(self.topic, 0): len(self.refs) - self.position}

    def close(self) -> None:
        pass


def refs_from_listing(path: Path) -> list[tuple[str, str]]:
    """A folder (image files, recursive), a file of URIs (one per line), or a CSV/JSONL manifest
    with `uri` (and optionally `id`) columns. The id defaults to the URI."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return [(p.resolve().as_uri(), p.resolve().as_uri()) for p in files]
    text = path.read_text()
    if path.suffix.lower() == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [(str(r.get("id") or r["uri"]), r["uri"]) for r in rows]
    if path.suffix.lower() == ".csv":
        import csv

        rows = list(csv.DictReader(text.splitlines()))
        return [(r.get("id") or r["uri"], r["uri"]) for r in rows]
    uris = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [(u, u) for u in uris]


def refs_from_s3(prefix_uri: str) -> list[tuple[str, str]]:
    try:
        import boto3
    except ImportError as exc:
        raise ValueError("s3:// listings need boto3: pip install 'featdistill[s3]'") from exc
    bucket, _, prefix = prefix_uri[len("s3://"):].partition("/")
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])
            if Path(o["Key"]).suffix.lower() in IMAGE_SUFFIXES]
    return [(f"s3://{bucket}/{k}", f"s3://{bucket}/{k}") for k in sorted(keys)]


class KafkaRangeSource:
    """A fixed range of a topic, read without a consumer group (manual assignment)."""

    def __init__(self, consumer, topic: str, start: dict[int, int], end: dict[int, int],
                 checkpoint: Checkpoint) -> None:
        from kafka import TopicPartition as KTP

        self.consumer, self.topic, self.end, self.checkpoint = consumer, topic, end, checkpoint
        self.start = {p: checkpoint.committed(topic, p) or start[p] for p in start}
        self._tps = {p: KTP(topic, p) for p in start}
        consumer.assign(list(self._tps.values()))
        for p, tp in self._tps.items():
            consumer.seek(tp, self.start[p])
        self._done = {p for p in start if self.start[p] >= end[p]}
        if self._done:
            consumer.pause(*[self._tps[p] for p in self._done])

    def total(self) -> int:
        return sum(self.end[p] - (self.checkpoint.plan["start"][str(p)]) for p in self.end)

    def completed_before_start(self) -> int:
        return sum(self.start[p] - self.checkpoint.plan["start"][str(p)] for p in self.end)

    def exhausted(self) -> bool:
        return len(self._done) == len(self.end)

    def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        out = []
        for tp, messages in batches.items():
            end = self.end[tp.partition]
            for m in messages:
                if m.offset < end:
                    out.append(Record(m.topic, m.partition, m.offset, m.key, m.value,
                                      tuple(m.headers or ())))
            if self.consumer.position(tp) >= end:
                self._done.add(tp.partition)
                self.consumer.pause(tp)
        return out

    def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        self.checkpoint.save(offsets)
        return True

    def pause(self) -> None:
        self.consumer.pause(*self._tps.values())

    def resume(self) -> None:  # finished partitions stay paused
        self.consumer.resume(*[tp for p, tp in self._tps.items() if p not in self._done])

    def assignment(self) -> set[TopicPartition]:
        return {(self.topic, p) for p in self.end}

    def lag(self) -> dict[TopicPartition, int]:
        return {(self.topic, p): max(0, self.end[p] - self.consumer.position(tp))
                for p, tp in self._tps.items()}

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def plan_topic_range(consumer, topic: str, since: datetime | None, until: datetime | None,
                     offsets: dict[int, tuple[int, int]] | None) -> tuple[dict, dict]:
    """Start and end offsets per partition, fixed now: by explicit offsets or by time range."""
    from kafka import TopicPartition as KTP

    partitions = sorted(consumer.partitions_for_topic(topic) or [])
    if not partitions:
        raise ValueError(f"topic {topic!r} does not exist or has no partitions")
    tps = [KTP(topic, p) for p in partitions]
    first = consumer.beginning_offsets(tps)
    last = consumer.end_offsets(tps)
    start = {tp.partition: first[tp] for tp in tps}
    end = {tp.partition: last[tp] for tp in tps}
    if offsets:
        start = {p: offsets[p][0] for p in offsets}
        end = {p: min(offsets[p][1], end[p]) for p in offsets}
    for bound, target in ((since, start), (until, end)):
        if bound is None:
            continue
        found = consumer.offsets_for_times({tp: int(bound.timestamp() * 1000) for tp in tps})
        for tp in tps:
            hit = found.get(tp)
            target[tp.partition] = hit.offset if hit is not None else last[tp]
    return start, end


class JsonlSink:
    """Verdicts to a JSONL file and dead letters to `<file>.dead.jsonl`; fsynced per publish, so
    a published result is on disk before its offset is checkpointed."""

    def __init__(self, path: Path, verdict_topic: str) -> None:
        self.verdict_topic = verdict_topic
        path.parent.mkdir(parents=True, exist_ok=True)
        self._files = {"verdict": open(path, "a"),
                       "dead": open(path.with_name(path.name + ".dead.jsonl"), "a")}

    def publish(self, messages: Iterable[Outgoing]) -> None:
        touched = set()
        for m in messages:
            which = "verdict" if m.topic == self.verdict_topic else "dead"
            self._files[which].write(m.value.decode() + "\n")
            touched.add(which)
        for which in touched:
            self._files[which].flush()
            os.fsync(self._files[which].fileno())

    def close(self) -> None:
        for f in self._files.values():
            f.close()
