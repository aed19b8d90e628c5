"""Replay jobs: listings and topic ranges through the worker's pipeline, resume, summaries."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from shell.cli import main

from conftest import make_image, write_tiny_bundle
from services import create_topic, produce, read_topic, require_services, unique


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "uploads"
    d.mkdir()
    for i in range(7):
        make_image(40, 40, seed=i).save(d / f"u{i}.png")
    return d


@pytest.fixture
def env(monkeypatch, folder, tmp_path):
    monkeypatch.setenv("FEATDISTILL_FILE_ROOTS", json.dumps([str(tmp_path)]))
    monkeypatch.setenv("FEATDISTILL_VERDICT_TOPIC", "image-verdicts")
    monkeypatch.setenv("FEATDISTILL_DEVICE", "cpu")


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_listing_replay_to_jsonl_resumes_and_compares(env, folder, tmp_path, tiny_bundle, capsys):
    out = tmp_path / "replay.jsonl"
    state = tmp_path / "replay.jsonl.state.json"
    listing = tmp_path / "uris.txt"
    uris = sorted(p.as_uri() for p in folder.iterdir())
    listing.write_text("\n".join(uris + [(folder / "gone.png").as_uri()]) + "\n")
    # An earlier run was interrupted after committing the first three references.
    state.write_text(json.dumps({"plan": {"source": f"listing:{listing}"},
                                 "offsets": {"listing:0": 3}}))
    args = ["replay", "--bundle", str(tiny_bundle), "--from-listing", str(listing),
            "--out", str(out), "--no-cache", "--no-progress"]
    assert main(args) == 0
    verdicts = lines(out)
    assert sorted(v["id"] for v in verdicts) == uris[3:]  # in the order the fetches finished
    dead = lines(tmp_path / "replay.jsonl.dead.jsonl")
    assert len(dead) == 1 and dead[0]["error_kind"] == "fetch_not_found"
    assert json.loads(state.read_text())["offsets"]["listing:0"] == len(uris) + 1
    assert "judged 4 (cached 0), dead letters 1" in capsys.readouterr().out
    # A second run has nothing left to do.
    assert main(args) == 0
    assert len(lines(out)) == 4
    # Compare against a previous model's verdicts: flip two labels.
    previous = tmp_path / "previous.jsonl"
    flipped = {"ai_generated": "real", "real": "ai_generated"}
    previous.write_text("\n".join(json.dumps({"id": v["id"], "label": flipped[v["label"]] if i < 2
                                              else v["label"]}) for i, v in enumerate(verdicts)))
    out2 = tmp_path / "again.jsonl"
    assert main(["replay", "--bundle", str(tiny_bundle), "--from-listing", str(folder),
                 "--out", str(out2), "--no-cache", "--no-progress", "--previous", str(previous)]) == 0
    text = capsys.readouterr().out
    assert "judged 7" in text and "4 in common, 2 changed labels" in text


def test_replay_refuses_the_live_topic(env, folder, tiny_bundle, capsys):
    code = main(["replay", "--bundle", str(tiny_bundle), "--from-listing", str(folder),
                 "--to-topic", "image-verdicts", "--no-progress"])
    assert code == 2 and "live verdict topic" in capsys.readouterr().err


@pytest.mark.services
def test_topic_replay_by_time_with_fixed_end_and_cache_modes(env, folder, tmp_path, monkeypatch):
    bootstrap, redis_url = require_services()
    monkeypatch.setenv("FEATDISTILL_KAFKA_BOOTSTRAP", bootstrap)
    monkeypatch.setenv("FEATDISTILL_REDIS_URL", redis_url)
    bundle = write_tiny_bundle(tmp_path / "bundle", version=unique("replay"))
    topic = unique("history")
    create_topic(bootstrap, topic, 3)
    uris = sorted(p.as_uri() for p in folder.iterdir())

    def refs(prefix):
        return [(f"{prefix}{i}".encode(), json.dumps({"id": f"{prefix}{i}", "uri": u}).encode())
                for i, u in enumerate(uris)]

    produce(bootstrap, topic, refs("old-"))
    time.sleep(1.5)
    since = datetime.now(timezone.utc)
    time.sleep(0.5)
    produce(bootstrap, topic, refs("new-"))
    out_topic = unique("replayed")
    state = tmp_path / "state.json"
    args = ["replay", "--bundle", str(bundle), "--from-topic", topic, "--since", since.isoformat(),
            "--to-topic", out_topic, "--state", str(state), "--no-progress"]
    assert main(args) == 0
    verdicts = read_topic(bootstrap, out_topic, len(uris))
    assert sorted(v["id"] for v in verdicts) == sorted(f"new-{i}" for i in range(len(uris)))
    assert not any(v["cached"] for v in verdicts)
    # The end was fixed when the job started: later messages are not part of this replay.
    produce(bootstrap, topic, refs("later-"))
    assert main(args) == 0
    assert len(read_topic(bootstrap, out_topic, len(uris), timeout_s=2)) == len(uris)
    # A new replay of the same images hits the cache; --refresh-cache judges each distinct image
    # again (identical images within the run still share one inference).
    for flag, judged in (([], 0), (["--refresh-cache"], len(uris))):
        out = tmp_path / f"cache{len(flag)}.jsonl"
        assert main(["replay", "--bundle", str(bundle), "--from-topic", topic, "--offsets",
                     "0:0-1000,1:0-1000,2:0-1000", "--out", str(out), "--no-progress", *flag]) == 0
        got = lines(out)
        assert len(got) == 3 * len(uris)
        assert sum(not v["cached"] and not v["duplicate_of"] for v in got) == judged
