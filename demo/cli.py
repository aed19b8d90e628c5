"""`featdistill demo`: the whole product on one machine, in about a minute.

Publishes references to a handful of images (plus one duplicate and one broken reference) to
Kafka, runs `featdistill worker` as a real process until every reference is judged, prints the
verdicts and a summary, and stops the worker. Kafka and Redis must be running (scripts/demo.sh
starts and stops them with deploy/local/services.sh, and builds the starter bundle).

Images: `--manifest` picks a seeded half-real, half-AI sample from a labelled manifest and shows
the truth beside each verdict, then how many verdicts were right; `--images` takes files;
otherwise a few generated pictures. scripts/demo.sh passes the manifest of the package images
(demo/images.py). The bundle: `--bundle`, or a tiny random one that shows the plumbing only.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from detector import presets
from detector.bundle import save_bundle
from shell.cli import CliError
from detector.expert import Expert


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="publish sample references and judge them with a worker")
    p.add_argument("--bundle", type=Path, help="bundle to judge with (default: a tiny random one)")
    p.add_argument("--images", type=Path, nargs="*", default=[],
                   help="image files to publish (default: generated images)")
    p.add_argument("--manifest", type=Path,
                   help="labelled manifest (path,label,generator,...) to draw images from")
    p.add_argument("--count", type=int, default=8, help="images drawn from --manifest")
    p.add_argument("--generators", default="",
                   help="with --manifest: draw AI images only from these generators (comma list)")
    p.add_argument("--timeout", type=float, default=180.0)
    p.set_defaults(func=run)


def _generated_images(folder: Path, count: int = 6) -> list[Path]:
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        img = Image.new("RGB", (192, 144), tuple(int(c) for c in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(5):
            x, y = rng.integers(0, 150, 2)
            draw.ellipse((x, y, x + 40, y + 30), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        path = folder / f"sample-{i}.{'jpg' if i % 2 else 'png'}"
        img.filter(ImageFilter.GaussianBlur(1)).save(path)
        paths.append(path)
    return paths


def run(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer

    from worker.adapters.kafka_security import client_options
    from worker.settings import SecuritySettings

    bootstrap = os.environ.get("FEATDISTILL_KAFKA_BOOTSTRAP")
    if not bootstrap:  # the local broker's port is per checkout: no default to guess
        raise CliError("set FEATDISTILL_KAFKA_BOOTSTRAP (and FEATDISTILL_REDIS_URL), e.g. with "
                       "eval \"$(bash deploy/local/services.sh env)\", as scripts/demo.sh does")
    try:  # the worker's own Kafka security settings: the demo's clients talk to the same broker
        kafka_options = client_options(SecuritySettings().kafka_security())
    except ValueError as exc:  # pydantic's ValidationError
        raise CliError(str(exc).replace("\n", " ")) from None
    work = Path(tempfile.mkdtemp(prefix="featdistill-demo-"))
    bundle = args.bundle or _tiny_bundle(work / "bundle")
    truth: dict[Path, str] = {}
    if args.manifest:
        truth = _from_manifest(args.manifest, args.count, args.generators)
    images = list(truth) or [p.resolve() for p in args.images] or _generated_images(work)
    run_id = uuid.uuid4().hex[:6]
    topics = {"in": f"demo-refs-{run_id}", "out": f"demo-verdicts-{run_id}",
              "dead": f"demo-dead-{run_id}"}
    refs = [(f"img-{i}", p.as_uri()) for i, p in enumerate(images)]
    refs.append(("duplicate-of-img-0", images[0].as_uri()))
    refs.append(("broken", (work / "no-such-upload.png").as_uri()))
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **kafka_options)
    for ref_id, uri in refs:
        producer.send(topics["in"], key=ref_id.encode(),
                      value=json.dumps({"id": ref_id, "uri": uri}).encode())
    producer.flush()
    producer.close()
    print(f"published {len(refs)} references to {topics['in']}", file=sys.stderr)

    roots = sorted({str(p.parent) for p in images} | {str(work)})
    env = {**os.environ, "FEATDISTILL_BUNDLE": str(bundle),
           "FEATDISTILL_INPUT_TOPIC": topics["in"], "FEATDISTILL_VERDICT_TOPIC": topics["out"],
           "FEATDISTILL_DEAD_LETTER_TOPIC": topics["dead"], "FEATDISTILL_GROUP_ID": f"demo-{run_id}",
           "FEATDISTILL_KAFKA_BOOTSTRAP": bootstrap, "FEATDISTILL_FILE_ROOTS": json.dumps(roots),
           "FEATDISTILL_METRICS_PORT": "0", "FEATDISTILL_LOG_FORMAT": "console",
           "FEATDISTILL_WORKER_ID": "demo-worker"}
    worker = subprocess.Popen([sys.executable, "-m", "shell.cli", "worker"], env=env)
    try:
        verdicts, dead = _collect(bootstrap, kafka_options, topics, len(refs), args.timeout)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    _print(verdicts, dead, {f"img-{i}": truth.get(p, "") for i, p in enumerate(images)},
           {f"img-{i}": p.name for i, p in enumerate(images)}
           | {"duplicate-of-img-0": images[0].name})
    print(f"worker exited with {code}", file=sys.stderr)
    return 0 if len(verdicts) + len(dead) == len(refs) and code == 0 else 1


def _tiny_bundle(out: Path) -> Path:
    spec = presets.tiny("demo-tiny-random")
    save_bundle(out, spec, [Expert.build(s) for s in spec.experts],
                {"note": "random weights: scores are meaningless, the plumbing is real"})
    return out


def _collect(bootstrap: str, kafka_options: dict, topics: dict, expected: int, timeout_s: float):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topics["out"], topics["dead"], bootstrap_servers=bootstrap,
                             auto_offset_reset="earliest", group_id=None, consumer_timeout_ms=500,
                             **kafka_options)
    verdicts, dead = [], []
    deadline = time.monotonic() + timeout_s
    try:
        while len(verdicts) + len(dead) < expected and time.monotonic() < deadline:
            for m in consumer:
                (verdicts if m.topic == topics["out"] else dead).append(json.loads(m.value))
    finally:
        consumer.close()
    return verdicts, dead


def _from_manifest(manifest: Path, count: int, generators: str) -> dict[Path, str]:
    """A seeded pick of count/2 real and count/2 AI images: path -> "real" or "AI (<generator>)"."""
    import csv

    keep = {g.strip() for g in generators.split(",") if g.strip()}
    with open(manifest, newline="") as f:
        rows = [r for r in csv.DictReader(f) if (manifest.parent / r["path"]).is_file()]
    real = [r for r in rows if r["label"] == "real"]
    fake = [r for r in rows if r["label"] == "fake" and (not keep or r["generator"] in keep)]
    rng = np.random.default_rng(11)
    picked = []
    for group, n in ((real, count // 2), (fake, count - count // 2)):
        picked += [group[i] for i in rng.choice(len(group), size=min(n, len(group)), replace=False)]
    return {(manifest.parent / r["path"]).resolve():
            "real" if r["label"] == "real" else f"AI ({r['generator']})" for r in picked}


def _print(verdicts: list[dict], dead: list[dict], truth: dict[str, str],
           names: dict[str, str] | None = None) -> None:
    names = names or {}
    show = any(truth.values())
    print(f"\n{'id':<22} {'label':<13} {'score':>6}  {'reused':<13} {'latency ms':>10}"
          + (f"  {'truth':<28}" if show else "") + "  image")
    for v in sorted(verdicts, key=lambda v: v["id"]):
        line = (f"{v['id']:<22} {v['label']:<13} {v['score']:>6.3f}  {_reused(v):<13} "
                f"{v['latency_ms']:>10.1f}" + (f"  {truth.get(v['id'], ''):<28}" if show else "")
                + f"  {names.get(v['id'], '')}")
        print(line.rstrip())
    for d in dead:
        print(f"{d['id'] or '?':<22} dead letter: {d['error_kind']}: {d['error']}")
    cached = sum(bool(v.get("cached")) for v in verdicts)
    duplicates = sum(bool(v.get("duplicate_of")) for v in verdicts)
    print(f"\nsummary: judged {len(verdicts)}, of which from the cache {cached}, in-flight "
          f"duplicates {duplicates}; dead letters {len(dead)}")
    if show:
        print(_score_line(verdicts, truth))


def _reused(verdict: dict) -> str:
    """How a verdict was reused: a cache hit (exact or near) or an identical image in flight."""
    if verdict.get("cached"):
        return f"cache, {verdict.get('cache') or 'hit'}"
    if verdict.get("duplicate_of"):
        return "in flight"
    return "-"


def _score_line(verdicts: list[dict], truth: dict[str, str]) -> str:
    """How many verdicts match the truth, per class ("uncertain" counts as not right)."""
    right = {"real": [0, 0], "AI": [0, 0]}
    for v in verdicts:
        t = truth.get(v["id"], "")
        if not t:
            continue
        cls = "real" if t == "real" else "AI"
        right[cls][1] += 1
        right[cls][0] += v["label"] == ("real" if cls == "real" else "ai_generated")
    total = [sum(x) for x in zip(*right.values())]
    return (f"right: {total[0]} of {total[1]} distinct images (AI images called AI: "
            f"{right['AI'][0]} of {right['AI'][1]}; real photos called real: "
            f"{right['real'][0]} of {right['real'][1]})")
