"""`featdistill bundle` and `featdistill detect` end to end, in process (main takes argv)."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from detector.results_file import ResultsFile, ResultsFileError
from shell.cli import main

from conftest import write_tiny_bundle


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bundle_init_and_inspect(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["bundle", "init", "--preset", "tiny", "--out", str(out), "--version", "v1"]) == 0
    assert main(["bundle", "inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert '"verified": true' in text and '"model_version": "v1"' in text
    weights = sorted(out.glob("*.safetensors"))[0]
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert main(["bundle", "inspect", str(out)]) == 2
    assert "ChecksumMismatchError" in capsys.readouterr().err


def test_paper_dry_run_builds_on_meta_without_memory(capsys):
    assert main(["bundle", "init", "--preset", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "open_clip:ViT-L-14" in out and "transformers:SiglipVisionModel" in out
    assert "304,163,586" in out  # ViT-L/14 visual tower + head
    assert "1,465,369,736" in out  # the four experts


def test_detect_end_to_end_with_bad_file(tiny_bundle, image_dir, tmp_path):
    bad = image_dir / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    out = tmp_path / "scores.jsonl"
    assert main(["detect", str(image_dir), "--bundle", str(tiny_bundle), "--out", str(out),
                 "--batch-size", "3", "--no-progress"]) == 0
    rows = _rows(out)
    assert len(rows) == 7  # 5 png + nested jpg + broken; notes.txt is not an image suffix
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert by_name["broken.jpg"]["error"].startswith("not_an_image")
    assert by_name["broken.jpg"]["score"] is None
    good = [r for r in rows if r["error"] is None]
    assert len(good) == 6
    for r in good:
        assert 0 <= r["score"] <= 1 and r["label"] in ("ai_generated", "real")
        assert len(r["experts"]) == 4 and r["model_version"] == "tiny-test"
    meta = json.loads((tmp_path / "scores.jsonl.meta.json").read_text())
    assert meta["model_version"] == "tiny-test" and len(meta["bundle_digest"]) == 64


def test_detect_resumes_after_a_crash(tiny_bundle, image_dir, tmp_path):
    out = tmp_path / "scores.jsonl"
    args = ["detect", str(image_dir), "--bundle", str(tiny_bundle), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    full = _rows(out)
    # Simulate a crash: keep two complete rows and half of the third.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:20])
    assert main(args) == 0
    resumed = _rows(out)
    assert sorted(r["path"] for r in resumed) == sorted(r["path"] for r in full)
    assert len({r["path"] for r in resumed}) == len(resumed)  # no duplicates
    assert resumed[:2] == full[:2]
    # A third run has nothing left to do.
    assert main(args) == 0
    assert len(_rows(out)) == len(full)


def test_detect_refuses_an_output_of_another_bundle(tiny_bundle, image_dir, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    assert main(["detect", str(image_dir), "--bundle", str(tiny_bundle), "--out", str(out),
                 "--no-progress"]) == 0
    other = write_tiny_bundle(tmp_path / "other", seed=1, version="tiny-other")
    assert main(["detect", str(image_dir), "--bundle", str(other), "--out", str(out),
                 "--no-progress"]) == 2
    assert "Refusing to mix results" in capsys.readouterr().err


def test_detect_csv_output(tiny_bundle, image_dir, tmp_path):
    out = tmp_path / "scores.csv"
    for _ in range(2):  # the second run resumes and appends nothing
        assert main(["detect", str(image_dir), "--bundle", str(tiny_bundle), "--out", str(out),
                     "--no-progress"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6
    assert {"path", "score", "label", "model_version", "error", "expert:clip-tiny-a"} <= set(rows[0])


def test_detect_to_stdout_and_missing_path(tiny_bundle, image_dir, tmp_path, capsys):
    assert main(["detect", str(image_dir / "img0.png"), "--bundle", str(tiny_bundle),
                 "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["path"].endswith("img0.png")
    assert main(["detect", str(tmp_path / "nope.png"), "--bundle", str(tiny_bundle)]) == 2


def test_detect_with_a_broken_bundle_is_a_clear_error(tiny_bundle, image_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    next(broken.glob("*.safetensors")).unlink()
    assert main(["detect", str(image_dir), "--bundle", str(broken)]) == 2
    assert "MissingWeightsError" in capsys.readouterr().err


def test_results_file_is_locked_against_a_second_writer(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsFile(path, "d" * 64, "v", ["a"]):
        with pytest.raises(ResultsFileError, match="lock held"):
            ResultsFile(path, "d" * 64, "v", ["a"])


def test_foreign_file_is_not_appended_to(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"path": "x"}\n')
    with pytest.raises(ResultsFileError, match="not written by featdistill detect"):
        ResultsFile(path, "d" * 64, "v", ["a"])


def test_bundle_compose_merges_expert_bundles(tmp_path, capsys):
    a = write_tiny_bundle(tmp_path / "a", seed=1, version="a")
    b = write_tiny_bundle(tmp_path / "b", seed=2, version="b")
    out = tmp_path / "ensemble"
    # Same expert names twice is an error: names must stay unique in an ensemble.
    assert main(["bundle", "compose", str(a), str(b), "--out", str(out), "--version", "v"]) == 2
    assert "unique" in capsys.readouterr().err
    from detector.bundle import load_experts, read_manifest, save_bundle
    from detector.spec import EnsembleSpec

    experts = load_experts(b)[:2]
    import dataclasses

    renamed = []
    for e, name in zip(experts, ("other-1", "other-2")):
        e.spec = dataclasses.replace(e.spec, name=name)
        renamed.append(e)
    save_bundle(tmp_path / "c", EnsembleSpec(tuple(e.spec for e in renamed), 0.5, "c"), renamed)
    assert main(["bundle", "compose", str(a), str(tmp_path / "c"), "--out", str(out),
                 "--version", "v2", "--threshold", "0.4"]) == 0
    manifest = read_manifest(out)
    assert [e.name for e in manifest.ensemble.experts] == [
        "clip-tiny-a", "clip-tiny-b", "siglip-tiny-a", "siglip-tiny-b", "other-1", "other-2"]
    assert manifest.ensemble.threshold == 0.4
    assert [s["model_version"] for s in manifest.provenance["composed_from"]] == ["a", "c"]
