"""Bundles: round trip, and a distinct error for each way a bundle can be broken."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from detector.bundle import (
    ChecksumMismatchError,
    ManifestError,
    MissingWeightsError,
    SpecMismatchError,
    TruncatedWeightsError,
    load_experts,
    read_manifest,
    verify_files,
)
from detector.service import Detector

from conftest import make_image


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    return copy


def _first_weights(bundle):
    manifest = read_manifest(bundle)
    name = manifest.ensemble.experts[0].name
    return bundle / manifest.weights[name].file


def test_round_trip_keeps_specs_weights_and_scores(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    assert manifest.ensemble.version == "tiny-test"
    assert [e.name for e in manifest.ensemble.experts] == [
        "clip-tiny-a", "clip-tiny-b", "siglip-tiny-a", "siglip-tiny-b"]
    assert {e.backbone.backend for e in manifest.ensemble.experts} == {"open_clip", "transformers"}
    a = load_experts(tiny_bundle)
    b = load_experts(tiny_bundle)
    for x, y in zip(a, b):
        for (k1, v1), (k2, v2) in zip(x.state_dict().items(), y.state_dict().items()):
            assert k1 == k2 and torch.equal(v1, v2)
    images = [make_image(seed=i) for i in range(3)]
    s1 = Detector(manifest.ensemble, a).predict(images)
    s2 = Detector.load(tiny_bundle).predict(images)
    assert [s.experts for s in s1] == [s.experts for s in s2]


def test_manifest_records_size_and_sha256(tiny_bundle):
    doc = json.loads((tiny_bundle / "manifest.json").read_text())
    assert doc["format"] == "featdistill.bundle" and doc["format_version"] == 1
    for expert in doc["experts"]:
        w = expert["weights"]
        path = tiny_bundle / w["file"]
        assert path.stat().st_size == w["size"] and len(w["sha256"]) == 64
    assert doc["provenance"]["test"] is True and "created_at" in doc["provenance"]


def test_missing_weights(bundle):
    _first_weights(bundle).unlink()
    with pytest.raises(MissingWeightsError, match="clip-tiny-a"):
        Detector.load(bundle)


def test_truncated_weights(bundle):
    path = _first_weights(bundle)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(TruncatedWeightsError, match="bytes on disk"):
        Detector.load(bundle)


def test_tampered_weights_same_size(bundle):
    path = _first_weights(bundle)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the tensor data, keeping the size
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="altered"):
        verify_files(bundle, read_manifest(bundle))


def test_spec_that_does_not_fit_the_weights(bundle):
    doc = json.loads((bundle / "manifest.json").read_text())
    doc["experts"][0]["head"]["hidden"] = 128  # weights were trained with 256
    (bundle / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(SpecMismatchError, match="do not fit the spec of expert 'clip-tiny-a'"):
        load_experts(bundle)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format_version=99), "format version 99"),
        (lambda d: d.update(format="other"), "format is 'other'"),
        (lambda d: d["experts"][0].pop("backbone"), "malformed expert spec"),
    ],
)
def test_bad_manifest(bundle, mutate, message):
    doc = json.loads((bundle / "manifest.json").read_text())
    mutate(doc)
    (bundle / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match=message):
        read_manifest(bundle)


def test_not_a_bundle(tmp_path):
    with pytest.raises(ManifestError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(tmp_path)
