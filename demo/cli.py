"""`featdistill demo`: the whole product on one machine, in about a minute.

Publishes references to a handful of images (plus one duplicate and one broken reference) to
Kafka (demo.broker), runs `featdistill worker` as a real process until every reference is judged,
prints the verdicts and a summary (demo.report), and stops the worker. Kafka and Redis must be
running (scripts/demo.sh starts and stops them with deploy/local/services.sh, and builds the
starter bundle).

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
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from demo import broker, report
from detector import presets
from detector.bundle import save_bundle
from detector.expert import Expert
from shell.cli import CliError
from train.data.records import DataError


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
    bootstrap = os.environ.get("FEATDISTILL_KAFKA_BOOTSTRAP")
    if not bootstrap:  # the local broker's port is per checkout: no default to guess
        raise CliError("set FEATDISTILL_KAFKA_BOOTSTRAP (and FEATDISTILL_REDIS_URL), e.g. with "
                       "eval \"$(bash deploy/local/services.sh env)\", as scripts/demo.sh does")
    kafka_options = broker.kafka_options(os.environ)  # the demo's clients talk to the same broker
    work = Path(tempfile.mkdtemp(prefix="featdistill-demo-"))
    bundle = args.bundle or _tiny_bundle(work / "bundle")
    truth: dict[Path, str] = {}
    if args.manifest:
        try:
            truth = report.pick(args.manifest, args.count, args.generators)
        except DataError as exc:
            raise CliError(str(exc)) from None
    images = list(truth) or [p.resolve() for p in args.images] or _generated_images(work)
    run_id = uuid.uuid4().hex[:6]
    topics = {"in": f"demo-refs-{run_id}", "out": f"demo-verdicts-{run_id}",
              "dead": f"demo-dead-{run_id}"}
    refs = [(f"img-{i}", p.as_uri()) for i, p in enumerate(images)]
    refs.append(("duplicate-of-img-0", images[0].as_uri()))
    refs.append(("broken", (work / "no-such-upload.png").as_uri()))
    broker.publish(bootstrap, kafka_options, topics["in"], refs)
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
        verdicts, dead = broker.collect(bootstrap, kafka_options, topics, len(refs), args.timeout)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    report.print_table(verdicts, dead, {f"img-{i}": truth.get(p, "") for i, p in enumerate(images)},
                       {f"img-{i}": p.name for i, p in enumerate(images)}
                       | {"duplicate-of-img-0": images[0].name})
    print(f"worker exited with {code}", file=sys.stderr)
    return 0 if len(verdicts) + len(dead) == len(refs) and code == 0 else 1


def _tiny_bundle(out: Path) -> Path:
    spec = presets.tiny("demo-tiny-random")
    save_bundle(out, spec, [Expert.build(s) for s in spec.experts],
                {"note": "random weights: scores are meaningless, the plumbing is real"})
    return out
