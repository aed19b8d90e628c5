"""A resumable results file for batch detection (JSONL or CSV).

Like the reference implementation's writer: rows are flushed as written and fsynced every N rows;
a sidecar `<out>.meta.json` binds the file to the bundle digest that produced it, so a re-run with
another bundle refuses to append; an exclusive lock file keeps two runs from interleaving; and on
re-open the paths already present are skipped. A torn last line (a crash mid-write) is cut off.
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable


class ResultsFileError(Exception):
    pass


FIXED_COLUMNS = ["path", "score", "label", "model_version", "error"]


class ResultsFile:
    def __init__(
        self, path: Path, digest: str, model_version: str, expert_names: Iterable[str],
        fsync_every: int = 64,
    ) -> None:
        self.path = Path(path)
        self.kind = "csv" if self.path.suffix.lower() == ".csv" else "jsonl"
        self.meta_path = self.path.with_name(self.path.name + ".meta.json")
        self.experts = list(expert_names)
        self.fsync_every = max(1, fsync_every)
        self.meta = {"bundle_digest": digest, "model_version": model_version,
                     "format": self.kind, "experts": self.experts}
        self._pending = 0
        self._lock = self._acquire_lock()
        try:
            self.done = self._check_and_read_existing()
            self._fh = open(self.path, "a", newline="" if self.kind == "csv" else None)
            if self.kind == "csv" and self._fh.tell() == 0:
                self._csv_writer().writeheader()
        except BaseException:
            self._release_lock()
            raise

    # -- opening -------------------------------------------------------------------------------
    def _acquire_lock(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path.with_name(self.path.name + ".lock"), "w")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise ResultsFileError(f"{self.path} is being written by another run (lock held)")
        return fh

    def _release_lock(self) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

    def _check_and_read_existing(self) -> set[str]:
        exists = self.path.exists() and self.path.stat().st_size > 0
        if not exists:
            self.meta_path.write_text(json.dumps(self.meta, indent=2))
            return set()
        if not self.meta_path.exists():
            raise ResultsFileError(
                f"{self.path} exists but has no {self.meta_path.name}: it was not written by "
                "featdistill detect; choose another --out"
            )
        old = json.loads(self.meta_path.read_text())
        if old.get("bundle_digest") != self.meta["bundle_digest"]:
            raise ResultsFileError(
                f"{self.path} was written by bundle {old.get('model_version')!r} "
                f"(digest {str(old.get('bundle_digest'))[:16]}); this run uses "
                f"{self.meta['model_version']!r} (digest {self.meta['bundle_digest'][:16]}). "
                "Refusing to mix results: choose another --out"
            )
        self._cut_torn_tail()
        with open(self.path, newline="") as f:
            if self.kind == "csv":
                return {row["path"] for row in csv.DictReader(f) if row.get("path")}
            return {json.loads(line)["path"] for line in f if line.strip()}

    def _cut_torn_tail(self) -> None:
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    # -- writing -------------------------------------------------------------------------------
    def _csv_writer(self) -> csv.DictWriter:
        columns = FIXED_COLUMNS + [f"expert:{n}" for n in self.experts]
        return csv.DictWriter(self._fh, fieldnames=columns)

    def write(self, record: dict[str, Any]) -> None:
        if self.kind == "csv":
            row = {k: record.get(k) for k in FIXED_COLUMNS}
            row.update({f"expert:{n}": v for n, v in (record.get("experts") or {}).items()})
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=self._csv_writer().fieldnames)
            writer.writerow(row)
            self._fh.write(buf.getvalue())
        else:
            self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        self.done.add(record["path"])
        self._pending += 1
        if self._pending >= self.fsync_every:
            self.sync()

    def sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._pending = 0

    def close(self) -> None:
        if self._fh.closed:
            return
        self.sync()
        self._fh.close()
        self._release_lock()

    def __enter__(self) -> "ResultsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
