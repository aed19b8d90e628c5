"""Checkpoint bundles: a directory with manifest.json and one safetensors file per expert.

The manifest records the format version, the model version and threshold, every expert's spec,
and for each weights file its size and SHA-256. Loading checks size, then digest, then loads the
state dict strictly, so a missing, truncated or tampered file, or weights that do not fit the spec,
each fail with their own error before any score is produced.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from detector.expert import Expert
from detector.spec import EnsembleSpec, SpecError, expert_from_dict, expert_to_dict

FORMAT = "featdistill.bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class BundleError(Exception):
    """Base of every reason a bundle cannot be used."""


class ManifestError(BundleError):
    """manifest.json is missing, unreadable, of another format or version, or inconsistent."""


class MissingWeightsError(BundleError):
    pass


class TruncatedWeightsError(BundleError):
    """The file's size differs from the manifest's: cut short or grown by a partial copy."""


class ChecksumMismatchError(BundleError):
    """Right size, wrong SHA-256: the bytes were altered after the bundle was written."""


class SpecMismatchError(BundleError):
    """The weights do not fit the architecture the manifest describes."""


@dataclass(frozen=True)
class WeightsFile:
    file: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    ensemble: EnsembleSpec
    weights: dict[str, WeightsFile]  # expert name -> file
    provenance: dict[str, Any] = field(default_factory=dict)
    digest: str = ""  # SHA-256 of manifest.json: identifies the bundle (weights included)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _file_name(expert_name: str) -> str:
    return "expert-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", expert_name) + ".safetensors"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_bundle(
    out_dir: str | Path,
    ensemble: EnsembleSpec,
    experts: Sequence[Expert],
    provenance: dict[str, Any] | None = None,
) -> Manifest:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if [e.spec for e in experts] != list(ensemble.experts):
        raise SpecError("the experts given do not match the ensemble spec, in order")
    entries: dict[str, WeightsFile] = {}
    for expert in experts:
        name = _file_name(expert.spec.name)
        state = {k: v.detach().contiguous().cpu() for k, v in expert.state_dict().items()}
        save_file(state, str(out / name), metadata={"expert": expert.spec.name})
        entries[expert.spec.name] = WeightsFile(
            name, (out / name).stat().st_size, sha256_file(out / name)
        )
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_version": ensemble.version,
        "threshold": ensemble.threshold,
        "experts": [
            {**expert_to_dict(spec), "weights": vars(entries[spec.name])}
            for spec in ensemble.experts
        ],
        "provenance": {
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(provenance or {}),
        },
    }
    _atomic_write(out / MANIFEST, json.dumps(doc, indent=2).encode())
    return read_manifest(out)


def read_manifest(bundle_dir: str | Path) -> Manifest:
    path = Path(bundle_dir) / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest.json; is {bundle_dir} a featdistill bundle?")
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    if doc.get("format") != FORMAT:
        raise ManifestError(f"{path}: format is {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ManifestError(
            f"{path}: format version {doc.get('format_version')!r} is not supported "
            f"(this featdistill reads version {FORMAT_VERSION})"
        )
    try:
        specs = tuple(expert_from_dict(e) for e in doc["experts"])
        ensemble = EnsembleSpec(specs, float(doc["threshold"]), str(doc["model_version"]))
        weights = {e["name"]: WeightsFile(**e["weights"]) for e in doc["experts"]}
    except (KeyError, TypeError, SpecError) as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    return Manifest(ensemble, weights, doc.get("provenance", {}), hashlib.sha256(raw).hexdigest())


def verify_files(bundle_dir: str | Path, manifest: Manifest) -> None:
    """Check every weights file is present with the recorded size and SHA-256."""
    for expert, entry in manifest.weights.items():
        path = Path(bundle_dir) / entry.file
        if not path.is_file():
            raise MissingWeightsError(f"{path}: weights of expert {expert!r} are missing")
        size = path.stat().st_size
        if size != entry.size:
            raise TruncatedWeightsError(
                f"{path}: {size} bytes on disk, manifest says {entry.size} (expert {expert!r})"
            )
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise ChecksumMismatchError(
                f"{path}: SHA-256 {digest[:16]}… differs from the manifest's "
                f"{entry.sha256[:16]}… (expert {expert!r}); the file was altered"
            )


def load_experts(bundle_dir: str | Path, manifest: Manifest | None = None) -> list[Expert]:
    """Verify the bundle, then build each expert and load its weights strictly (on CPU)."""
    manifest = manifest or read_manifest(bundle_dir)
    verify_files(bundle_dir, manifest)
    experts = []
    for spec in manifest.ensemble.experts:
        path = Path(bundle_dir) / manifest.weights[spec.name].file
        try:
            state = load_file(str(path))
        except SafetensorError as exc:
            raise SpecMismatchError(f"{path}: not a readable safetensors file ({exc})") from exc
        with torch.device("cpu"):
            expert = Expert.build(spec)
        try:
            expert.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0:3]
            raise SpecMismatchError(
                f"{path}: weights do not fit the spec of expert {spec.name!r} "
                f"({spec.backbone.backend}:{spec.backbone.model}): {' '.join(first)}"
            ) from exc
        experts.append(expert.eval())
    return experts
