"""The published message contract (worker/schemas/*.v1.json, JSON Schema 2020-12).

The schemas are valid, declare exactly the fields the code writes (a field added without a
schema change fails here), list every dead-letter reason, agree with the worker on which inputs
it accepts, and what the worker actually publishes validates: with the in-memory fakes (every
kind of verdict and dead letter) and through the real Kafka and Redis (a worker process, and a
replay job).
"""
from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, FormatChecker

import worker
from detector.batcher import BatchPolicy
from detector.images import ImageLimits
from detector.service import Detector
from worker.messages import (
    MESSAGE_ERROR_KINDS, SCHEMA_VERSION, DeadLetter, ImageReference, MessageError, OriginalMessage,
    Verdict, parse_reference,
)
from worker.ports import FETCH_ERROR_KINDS
from worker.testing import FakeJudge

from conftest import image_bytes, make_image
from test_cache_match import photo
from test_pipeline import CFG, FetchFailure, build, ref, step_until_fetched

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = Path(worker.__file__).parent / "schemas"
NAMES = ("image_reference", "verdict", "dead_letter")
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _rfc3339(value) -> bool:
    """jsonschema checks date-time only with an optional package; Python's parser does it."""
    return not isinstance(value, str) or (
        "T" in value and datetime.fromisoformat(value).tzinfo is not None)


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.v{SCHEMA_VERSION}.json").read_text())


VALIDATORS = {name: Draft202012Validator(schema(name), format_checker=FORMATS) for name in NAMES}


def assert_valid(name: str, message: dict) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
              for e in VALIDATORS[name].iter_errors(message)]
    assert not errors, f"{name} does not match its schema: {errors}\n{message}"


# -- the schemas themselves -------------------------------------------------------------------------
def test_the_schemas_are_valid_draft_2020_12_and_carry_the_version():
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == sorted(
        f"{n}.v{SCHEMA_VERSION}.json" for n in NAMES)
    for name in NAMES:
        s = schema(name)
        Draft202012Validator.check_schema(s)
        assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert s["$id"].endswith(f":{SCHEMA_VERSION}")
        assert s["properties"]["v"]["const"] == SCHEMA_VERSION
    assert "v" not in schema("image_reference")["required"]  # optional on input


def test_published_messages_declare_exactly_the_fields_the_code_writes():
    dead = schema("dead_letter")
    for model, s in ((Verdict, schema("verdict")), (DeadLetter, dead),
                     (OriginalMessage, dead["properties"]["original"])):
        assert set(model.model_fields) == set(s["properties"]), model
        # A field added within a version is not required: messages written before it lack it.
        assert set(s["required"]) <= set(s["properties"])
        assert s["additionalProperties"] is False
    ref_schema = schema("image_reference")
    assert set(ImageReference.model_fields) == set(ref_schema["properties"])
    assert set(ref_schema["required"]) == {
        n for n, f in ImageReference.model_fields.items() if f.is_required()}
    assert ref_schema["additionalProperties"] is True  # producers may add fields: ignored


def test_every_dead_letter_reason_the_worker_writes_is_listed():
    # decode_<kind>: what detector.images raises on bytes (unreadable_file is for paths only).
    decode = set(re.findall(r'ImageDecodeError\(\s*"(\w+)"',
                            (ROOT / "detector" / "images.py").read_text())) - {"unreadable_file"}
    written = ({*MESSAGE_ERROR_KINDS, "inference_error"} | {f"fetch_{k}" for k in FETCH_ERROR_KINDS}
               | {f"decode_{k}" for k in decode})
    kind = schema("dead_letter")["properties"]["error_kind"]
    assert set(kind["examples"]) == written
    assert all(re.fullmatch(kind["pattern"], k) for k in written)


@pytest.mark.parametrize("message, accepted", [
    ({"id": "a", "uri": "https://img.example/a.jpg"}, True),
    ({"v": 1, "id": "a", "uri": "s3://bucket/a.png"}, True),
    ({"id": "a", "uri": "u", "submitted_at": "2026-01-02T03:04:05Z", "attributes": {"k": [1]}},
     True),
    ({"id": "a", "uri": "u", "submitted_at": None, "attributes": None, "tenant": "acme"}, True),
    ({"id": "x" * 512, "uri": "u" * 4096}, True),
    ({"v": 2, "id": "a", "uri": "u"}, False),
    ({"id": "a"}, False),
    ({"id": "", "uri": "u"}, False),
    ({"id": "x" * 513, "uri": "u"}, False),
    ({"id": "a", "uri": "u" * 4097}, False),
    ({"id": 5, "uri": "u"}, False),
    ({"id": "a", "uri": "u", "attributes": "flat"}, False),
    ({"id": "a", "uri": "u", "submitted_at": "yesterday"}, False),
    ([{"id": "a", "uri": "u"}], False),
])
def test_the_input_schema_and_the_worker_agree_on_what_is_accepted(message, accepted):
    assert VALIDATORS["image_reference"].is_valid(message) is accepted
    try:
        parse_reference(json.dumps(message).encode())
    except MessageError as exc:
        assert not accepted, exc
        if isinstance(message, dict) and message.get("v") == 2:
            assert exc.kind == "unsupported_version"
    else:
        assert accepted


# -- what the pipeline publishes, with fakes ----------------------------------------------------------
@pytest.fixture(scope="module")
def detector(tiny_bundle):
    return Detector.load(tiny_bundle)


def published(sink) -> tuple[list[dict], list[dict]]:
    """Every verdict and dead letter on the sink, each validated against its schema."""
    verdicts = [json.loads(m.value) for m in sink.on("verdicts")]
    dead = [json.loads(m.value) for m in sink.on("dead")]
    for v in verdicts:
        assert_valid("verdict", v)
    for d in dead:
        assert_valid("dead_letter", d)
    return verdicts, dead


def test_every_kind_of_verdict_and_dead_letter_the_pipeline_publishes_validates(detector):
    timeout = FetchFailure("timeout")
    timeout.attempts = 3
    img = photo()
    blobs = {f"mem://img{i}": image_bytes(make_image(40, 30, seed=i)) for i in range(2)}
    blobs.update({"mem://photo": image_bytes(img, "JPEG", quality=92),
                  "mem://reencoded": image_bytes(img.resize((240, 180)), "JPEG", quality=60),
                  "mem://text": b"not an image", "mem://huge": image_bytes(make_image(400, 400))})
    cfg = replace(CFG, batch=BatchPolicy(8, 60.0), image_limits=ImageLimits(max_pixels=100_000))
    p, source, sink, _ = build(detector, blobs=blobs, errors={"mem://slow": timeout}, cfg=cfg)
    source.append(ref(0, "mem://img0"), headers=[("traceparent", TRACEPARENT)])
    source.append(ref(1, "mem://img0"))  # in flight with m0: a duplicate
    source.append(ref(2, "mem://photo"), key=b"\xff\xfe not utf-8")
    for value in (b"{not json", b"\xff\x00 binary", None, b'{"id": "x"}', b"[1]",
                  json.dumps({"v": 2, "id": "y", "uri": "mem://img1"}).encode()):
        source.append(value, key=b"k")
    for i, uri in enumerate(("mem://gone", "mem://slow", "mem://text", "mem://huge")):
        source.append(ref(10 + i, uri))
    step_until_fetched(p)
    p.drain()
    source.append(ref(3, "mem://img1"))  # judged now ...
    source.append(ref(4, "mem://img0"))  # ... and the cache answers these two
    source.append(ref(5, "mem://reencoded"))
    step_until_fetched(p)
    p.drain()
    verdicts, dead = published(sink)
    kinds = {("duplicate" if v["duplicate_of"] else v["cache"] or "judged") for v in verdicts}
    assert len(verdicts) == 6 and kinds == {"judged", "duplicate", "exact", "near"}
    assert sorted(d["error_kind"] for d in dead) == sorted([
        "not_json", "not_json", "empty_message", "invalid_message", "invalid_message",
        "unsupported_version", "fetch_not_found", "fetch_timeout", "decode_not_an_image",
        "decode_too_many_pixels"])
    assert {d["attempts"] for d in dead} == {1, 3}


def test_dead_letters_of_a_failed_batch_validate():
    p, source, sink, _ = build(FakeJudge(fail_with=RuntimeError("CUDA error: out of memory")))
    source.append(ref(0))
    source.append(ref(1, "mem://img0"))  # its follower is dead-lettered with it
    step_until_fetched(p)
    p.drain()
    _, dead = published(sink)
    assert [d["error_kind"] for d in dead] == ["inference_error"] * 2


# -- through the real Kafka and Redis -----------------------------------------------------------------
def read_with_headers(bootstrap: str, topic: str) -> list[tuple[dict, dict[str, bytes]]]:
    """Every message on the topic now: its JSON value and its Kafka headers."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=1500)
    try:
        return [(json.loads(m.value), dict(m.headers or [])) for m in consumer]
    finally:
        consumer.close()


def produce_with_headers(bootstrap: str, topic: str,
                         messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for key, value, headers in messages:
        producer.send(topic, key=key, value=value, headers=headers or None)
    producer.flush()
    producer.close()


@pytest.mark.services
@pytest.mark.slow
def test_a_worker_process_publishes_valid_messages_with_their_headers(tmp_path, services_env):
    from worker_runs import Run

    run = Run(tmp_path, services_env)
    traced = [("traceparent", TRACEPARENT), ("x-request-id", b"req-7")]
    try:
        produce_with_headers(run.bootstrap, run.input, [
            (b"ok-0", json.dumps({"id": "ok-0", "uri": run.image_uri(0)}).encode(), traced),
            (b"ok-1", json.dumps({"v": 1, "id": "ok-1", "uri": run.image_uri(1)}).encode(), []),
            (b"gone", json.dumps({"id": "gone", "uri": run.image_uri(0) + ".nope"}).encode(),
             traced),
            (b"broken", b"{not json", traced),
            (b"v2", json.dumps({"v": 2, "id": "v2", "uri": run.image_uri(1)}).encode(), []),
        ])
        w = run.start_worker("w1", FEATDISTILL_CARRY_HEADERS='["x-request-id"]',
                             FEATDISTILL_LOG_LEVEL="debug")
        run.results(5)
        # The verdict of ok-0 is in Redis now: the same image again is a cache hit.
        produce_with_headers(run.bootstrap, run.input, [
            (b"again", json.dumps({"id": "again", "uri": run.image_uri(0)}).encode(), [])])
        run.results(6)
        assert w.terminate() == 0
        verdicts = {v["id"]: (v, h) for v, h in read_with_headers(run.bootstrap, run.verdicts)}
        dead = {d["original"]["key"]: (d, h) for d, h in read_with_headers(run.bootstrap, run.dead)}
        for v, _ in verdicts.values():
            assert_valid("verdict", v)
        for d, _ in dead.values():
            assert_valid("dead_letter", d)
        assert set(verdicts) == {"ok-0", "ok-1", "again"} and verdicts["again"][0]["cached"]
        assert {k: d["error_kind"] for k, (d, _) in dead.items()} == {
            "gone": "fetch_not_found", "broken": "not_json", "v2": "unsupported_version"}
        carried = {"traceparent": TRACEPARENT, "x-request-id": b"req-7"}
        assert verdicts["ok-0"][1] == dead["gone"][1] == dead["broken"][1] == carried
        assert verdicts["ok-1"][1] == verdicts["again"][1] == dead["v2"][1] == {}
        lines = [json.loads(x) for x in w.log().splitlines() if x.startswith("{")]
        about = {x["id"]: x for x in lines if x.get("event") == "verdict"}
        assert about["ok-0"]["trace_id"] == TRACEPARENT.decode().split("-")[1]
        assert about["ok-0"]["headers"] == {"x-request-id": "req-7"}
        assert "trace_id" not in about["ok-1"] and "trace_id" not in about["again"]
    finally:
        run.close()


@pytest.mark.services
@pytest.mark.slow
def test_a_replay_from_a_topic_carries_headers_and_publishes_valid_verdicts(
        tmp_path, services_env, monkeypatch):
    from shell.cli import main
    from conftest import write_tiny_bundle
    from services import create_topic, unique

    bootstrap, redis_url = services_env
    images = tmp_path / "images"
    images.mkdir()
    uris = []
    for i in range(3):
        make_image(40, 40, seed=i).save(images / f"u{i}.png")
        uris.append((images / f"u{i}.png").as_uri())
    for name, value in (("KAFKA_BOOTSTRAP", bootstrap), ("REDIS_URL", redis_url),
                        ("FILE_ROOTS", json.dumps([str(images)])), ("DEVICE", "cpu"),
                        ("CARRY_HEADERS", '["x-request-id"]')):
        monkeypatch.setenv(f"FEATDISTILL_{name}", value)
    history, out = unique("history"), unique("replayed")
    create_topic(bootstrap, history, 1)
    produce_with_headers(bootstrap, history, [
        (f"h{i}".encode(), json.dumps({"id": f"h{i}", "uri": u}).encode(),
         [("traceparent", TRACEPARENT), ("x-request-id", f"req-{i}".encode())] if i else [])
        for i, u in enumerate(uris)])
    bundle = write_tiny_bundle(tmp_path / "bundle", version=unique("replay"))
    assert main(["replay", "--bundle", str(bundle), "--from-topic", history, "--offsets", "0:0-3",
                 "--to-topic", out, "--state", str(tmp_path / "state.json"),
                 "--no-progress"]) == 0
    got = {v["id"]: (v, h) for v, h in read_with_headers(bootstrap, out)}
    assert sorted(got) == ["h0", "h1", "h2"]
    for v, _ in got.values():
        assert_valid("verdict", v)
    assert got["h0"][1] == {}
    assert got["h2"][1] == {"traceparent": TRACEPARENT, "x-request-id": b"req-2"}


@pytest.fixture
def services_env():
    from services import require_services

    return require_services()
