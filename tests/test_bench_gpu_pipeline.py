"""bench/gpu_pipeline.py runs end to end (tiny preset, CPU, a few small photos): every reference of
the cold pass is judged (its photo variants are distinct pictures to the cache) and every one of
the second pass is a cache hit. Speed is not asserted."""
from __future__ import annotations

import json
import logging

import pytest
import structlog

from bench.common import make_images
from bench.gpu_pipeline import main


@pytest.fixture(autouse=True)
def restored_logging():
    """The bench configures logging onto this test's captured stderr; later tests must not log to
    that closed stream (test_contracts did, when run after this file)."""
    saved, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def test_gpu_pipeline_bench_runs_on_the_tiny_preset(tmp_path, capsys):
    make_images(tmp_path / "photos", 3, size=(400, 300))
    out = tmp_path / "gpu-pipeline.json"
    assert main(["--photos", str(tmp_path / "photos"), "--presets", "tiny", "--images", "8",
                 "--batches", "4", "--device", "cpu", "--fetch-threads", "2",
                 "--variant-workers", "1", "--bare-batches", "1", "--cpu-sample", "2",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    row = result["presets"]["tiny"]["by_batch"]["4"]
    assert row["worker_cold"]["judged"] == 8
    assert row["worker_cold"]["cache_hits"] == row["worker_cold"]["inflight_duplicates"] == 0
    assert row["worker_hits"]["cache_hits"] == 8 and row["worker_hits"]["judged"] == 0
    assert row["bare_forward_images_per_s"] > 0 and row["cores_per_gpu"] >= 0
    assert set(result["presets"]["tiny"]["preinference_one_core"]["ms_per_image"]) == {
        "fetch", "decode", "hash", "preprocess"}
    assert "in-memory stand-ins" in capsys.readouterr().out
