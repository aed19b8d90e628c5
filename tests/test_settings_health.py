"""Settings from the environment (one-line errors, README documents each) and health endpoints."""
from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from worker.health import HealthServer
from worker.metrics import Metrics
from worker.settings import PREFIX, Settings, SettingsError, load_settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_settings_become_frozen_configs():
    s = load_settings({"FEATDISTILL_BUNDLE": "/b", "FEATDISTILL_MAX_BATCH": "8",
                       "FEATDISTILL_MAX_WAIT_MS": "25", "FEATDISTILL_FILE_ROOTS": '["/data"]',
                       "FEATDISTILL_ALLOW_HOSTS": '["images.internal"]', "OTHER": "x"})
    cfg = s.configs()
    assert cfg.pipeline.batch.max_batch == 8 and cfg.pipeline.batch.max_wait_s == 0.025
    assert cfg.fetch.file_roots == ("/data",) and cfg.fetch.allow_hosts == ("images.internal",)
    with pytest.raises(Exception):
        cfg.pipeline.batch.max_batch = 3  # frozen


@pytest.mark.parametrize("env, message", [
    ({"FEATDISTILL_BUNDLE": "/b", "FEATDISTILL_MAX_BATCH": "many"}, "FEATDISTILL_MAX_BATCH: "),
    ({"FEATDISTILL_BUNDLE": "/b", "FEATDISTILL_MAX_BATCH": "0"}, "FEATDISTILL_MAX_BATCH: "),
    ({"FEATDISTILL_BUNDLE": "/b", "FEATDISTILL_LOG_FORMAT": "xml"}, "FEATDISTILL_LOG_FORMAT: "),
    ({}, "FEATDISTILL_BUNDLE: Field required"),
])
def test_bad_values_are_one_line_errors_naming_the_variable(env, message):
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_real_environment_is_read(monkeypatch):
    monkeypatch.setenv("FEATDISTILL_BUNDLE", "/from/env")
    monkeypatch.setenv("FEATDISTILL_FILE_ROOTS", '["/a", "/b"]')
    s = load_settings()
    assert s.bundle == "/from/env" and s.file_roots == ["/a", "/b"]


def test_readme_documents_every_setting():
    text = README.read_text()
    documented = set(re.findall(r"`(FEATDISTILL_[A-Z_]+)`", text))
    expected = {PREFIX + name.upper() for name in Settings.model_fields}
    assert expected - documented == set(), "settings missing from README"


def test_health_endpoints():
    state = {"ready": False}
    server = HealthServer(Metrics(), lambda: state["ready"], port=0, host="127.0.0.1").start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert urllib.request.urlopen(base + "/healthz").status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/readyz")
        assert err.value.code == 503
        state["ready"] = True
        assert urllib.request.urlopen(base + "/readyz").status == 200
        body = urllib.request.urlopen(base + "/metrics").read().decode()
        assert "featdistill_cache_up" in body and "featdistill_stage_seconds" in body
    finally:
        server.stop()


@pytest.mark.parametrize("make_bundle, message", [
    (lambda d: d / "absent", "no manifest.json"),
    (lambda d: (d / "manifest.json").write_text("{") and d, "not valid JSON"),
    (lambda d: (d / "file").write_text("x") and d / "file", "FEATDISTILL_BUNDLE="),
])
def test_a_bad_bundle_stops_the_worker_with_one_line(tmp_path, make_bundle, message):
    import os
    import subprocess
    import sys

    env = {**os.environ, "FEATDISTILL_BUNDLE": str(make_bundle(tmp_path)),
           "FEATDISTILL_METRICS_PORT": "0", "FEATDISTILL_LOG_FORMAT": "console"}
    done = subprocess.run([sys.executable, "-m", "shell.cli", "worker"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr
    assert lines[0].startswith("featdistill worker: error: FEATDISTILL_BUNDLE=")
