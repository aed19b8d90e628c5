"""`featdistill train | eval | degrade`: the trainer's subcommands, registered by shell.cli
through the `featdistill.commands` entry points (pyproject.toml)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

from detector.bundle import BundleError, load_experts, read_manifest, save_bundle
from detector.precision import PRECISIONS
from detector.preprocess import TTA_HELP, TTA_VIEWS
from detector.spec import SpecError
from shell.cli import CliError

_TRAIN_HELP = "train one expert (stage 1, then stage 2) from a TOML/YAML config and export it as a bundle"


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help=_TRAIN_HELP, description=_TRAIN_HELP)
    p.add_argument("config", type=Path, help="run config (.toml, .yaml); see examples/train/")
    p.add_argument("--out", type=Path, help="run folder (default: the config's out_dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's latest epoch checkpoint")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set stage1.epochs=2 (value read as YAML)")
    p.add_argument("--pack-views", type=Path, metavar="DIR",
                   help="do not train: write the pool's prepared reference views (small JPEGs) "
                        "to DIR, for a node without the sources to train on with "
                        "--set data.view_bank.prepared=DIR (train.data.prepared)")
    p.set_defaults(func=run_train)


def register_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score bundles on labelled data: AUC, AP, accuracy, robustness")
    p.add_argument("--bundle", type=Path, action="append", required=True,
                   help="bundle folder; repeat with --loo to tabulate leave-generator-out runs")
    p.add_argument("--data", type=Path, required=True,
                   help="labelled images: a manifest (.csv/.jsonl) or a real/ + fake/<gen>/ folder")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--degrade", default="", metavar="FAMILIES",
                   help="robustness table over these degradation families (comma list, or 'all')")
    p.add_argument("--levels", default="mild,medium,severe", help="levels for --degrade")
    p.add_argument("--jpeg", default="", metavar="QUALITIES",
                   help="also score plain JPEG re-encoding at these qualities, e.g. 30,50")
    p.add_argument("--text", action="store_true",
                   help="also score every image with words drawn on (condition text/words): how "
                        "far text alone moves the scores (train.data.text_overlay)")
    p.add_argument("--loo", action="store_true",
                   help="score each bundle only on what its training split held out, and table "
                        "its held-out generators (rebuilt from the bundle's provenance)")
    p.add_argument("--set-threshold-fpr", type=float, metavar="FPR",
                   help="choose the threshold giving this false-positive rate on these images "
                        "and write it into the bundle's manifest")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=0, help="decoding processes")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=PRECISIONS, default="auto",
                   help="precision: auto (bfloat16 on CUDA, float32 on CPU), fast (bfloat16 where native: CUDA or a CPU with AVX512-BF16/AMX, else float32), float32, bfloat16, float16")
    p.add_argument("--seed", type=int, default=0, help="seed of the degradations")
    p.add_argument("--limit", type=int, default=0, help="score at most N images (seeded subset)")
    p.add_argument("--tta", type=int, choices=sorted(TTA_VIEWS), default=1, metavar="N",
                   help=TTA_HELP)
    p.set_defaults(func=run_eval)


def register_degrade(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("degrade", help="show the degradation catalogue on an image (contact sheet)")
    p.add_argument("--show", type=Path, required=True, metavar="IMG", help="image to degrade")
    p.add_argument("--out", type=Path, required=True, help="PNG contact sheet to write")
    p.set_defaults(func=run_degrade)


# ----------------------------------------------------------------------------------- train
def run_train(args: argparse.Namespace) -> int:
    from train.data.records import DataError
    from train.fit.config import ConfigError, load_config
    from train.fit.run import RunError, train

    try:
        config = load_config(args.config, args.overrides)
        if args.pack_views:
            return _pack_views(config, args.pack_views)
        run_dir = args.out or Path(config.out_dir)
        started = time.perf_counter()
        result = train(config, run_dir, resume=args.resume)
    except (ConfigError, DataError, RunError, SpecError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from exc
    final = result.history[-1] if result.history else {}
    print(json.dumps({"run_dir": str(result.run_dir), "bundle": str(result.bundle_dir),
                      "epochs": len(result.history), "seconds": round(time.perf_counter() - started, 1),
                      "final": final}, indent=2))
    return 0


def _pack_views(config, out: Path) -> int:
    from train.data.prepared import pack_views
    from train.data.records import read_sources

    pool = sorted(read_sources(config.data.sources), key=lambda s: (s.key, s.origin))
    size = config.expert.resolve().preprocess.size
    counts = pack_views(pool, config.data.prep, size, config.data.view_bank.seed, out)
    print(json.dumps({"pack": str(out), **counts}))
    return 0


# ------------------------------------------------------------------------------------ eval
def _split_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def rewrite_threshold(bundle_dir: Path, threshold: float, note: dict) -> None:
    """Re-save the bundle with a new threshold (weights re-written unchanged, digests re-checked)."""
    manifest = read_manifest(bundle_dir)
    experts = load_experts(bundle_dir, manifest)
    provenance = {**manifest.provenance, "threshold_choice": note}
    ensemble = dataclasses.replace(manifest.ensemble, threshold=threshold)
    save_bundle(bundle_dir, ensemble, experts, provenance)


def _evaluate_one(path: Path, samples, conditions, args, threshold_fpr: float | None) -> dict:
    import numpy as np

    from detector.service import Detector
    from train.evaluate.metrics import threshold_at_fpr, threshold_interval
    from train.evaluate.scoring import score, summarize, write_scores

    detector = Detector.load(path, device=args.device, dtype=args.dtype, tta=args.tta)
    probs = score(detector, samples, conditions, args.batch_size, args.num_workers, args.seed)
    names = [e.spec.name for e in detector.experts]
    write_scores(args.out / f"scores-{path.name}.csv", samples, conditions, probs, names)
    threshold, note = detector.threshold, None
    if threshold_fpr is not None:
        labels = np.array([s.label for s in samples])
        clean = probs[0].mean(axis=0)
        threshold = threshold_at_fpr(labels, clean, threshold_fpr)
        interval = threshold_interval(labels, clean, threshold_fpr)
        note = {"target_fpr": threshold_fpr, "previous": detector.threshold, "threshold": threshold,
                "interval_90": list(interval), "data": str(args.data), "images": len(samples)}
        _warn_unstable_threshold(int((labels == 0).sum()), threshold_fpr, threshold, interval)
        rewrite_threshold(path, threshold, note)
    digest = read_manifest(path).digest if note else detector.digest
    report = summarize(probs, samples, conditions, names, threshold)
    return {"bundle": str(path), "model_version": detector.version, "digest": digest,
            "experts": names, "threshold_choice": note, **report}


def _warn_unstable_threshold(n_real: int, fpr: float, threshold: float, interval) -> None:
    # A rate is measured by the reals above the cut; with fewer than ten of them the threshold is
    # set by one or two images, and a bundle shipped with it flags rates nobody measured.
    print(f"threshold {threshold:.4f} at a {fpr:.1%} false-positive rate on {n_real} real images; "
          f"90 % bootstrap interval {interval[0]:.4f} to {interval[1]:.4f}", file=sys.stderr)
    if 0 < fpr and n_real * fpr < 10:
        print(f"warning: only {n_real * fpr:.1f} of the {n_real} reals are expected above it, so "
              f"the threshold is unstable; about {math.ceil(10 / fpr)} real images like your "
              "traffic pin it",
              file=sys.stderr)


def run_eval(args: argparse.Namespace) -> int:
    from train.data.records import DataError, SourceConfig, read_source, subsample
    from train.evaluate.report import write_reports
    from train.evaluate.scoring import families, loo_rows, loo_subset, make_conditions

    if len(args.bundle) > 1 and not args.loo:
        raise CliError("several --bundle are only meaningful with --loo")
    fpr = args.set_threshold_fpr
    if fpr is not None and (len(args.bundle) > 1 or not 0 <= fpr <= 1):
        raise CliError("--set-threshold-fpr takes one bundle and a rate in [0, 1]")
    try:
        samples = subsample(read_source(SourceConfig(path=str(args.data)), training=False), args.limit, args.seed)
        fams = families() if args.degrade == "all" else _split_list(args.degrade)
        conditions = make_conditions(fams, _split_list(args.levels),
                                     [int(q) for q in _split_list(args.jpeg)], text=args.text)
        doc = {"data": str(args.data), "seed": args.seed, "tta": args.tta,
               "conditions": [c.name for c in conditions],
               "bundles": [], "loo": []}
        for path in args.bundle:
            subset, unseen = samples, []
            if args.loo:
                subset, unseen = loo_subset(samples, read_manifest(path).provenance)
                if not subset:
                    raise CliError(f"{path}: its provenance records no held-out split of this data")
            report = _evaluate_one(path, subset, conditions, args, args.set_threshold_fpr)
            doc["bundles"].append(report)
            doc["loo"] += loo_rows(report, report["model_version"], unseen)
    except (DataError, BundleError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    aucs = [r["auc"] for r in doc["loo"] if r["auc"] is not None]
    doc["loo_mean_auc"] = sum(aucs) / len(aucs) if aucs else None
    paths = write_reports(args.out, doc)
    _print_summary(doc, paths)
    return 0


def _print_summary(doc: dict, paths: dict) -> None:
    for b in doc["bundles"]:
        m = b["overall"]["ensemble"]
        print(f"{b['bundle']}: {m['n_real']} real / {m['n_fake']} fake, AUC {m['auc']}, "
              f"AP {m['ap']}, acc@{b['threshold']:.4f} {m['acc']}")
    for r in doc["loo"]:
        print(f"  held-out {r['generator']:<24} AUC {r['auc']}")
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)


# --------------------------------------------------------------------------------- degrade
def run_degrade(args: argparse.Namespace) -> int:
    from train.degrade.contact_sheet import main_show

    if not args.show.is_file():
        raise CliError(f"{args.show}: no such image")
    try:
        out = main_show(args.show, args.out)
    except OSError as exc:
        raise CliError(f"{args.show}: {exc}") from exc
    print(out)
    return 0
