"""`featdistill bundle init|inspect`: create and check checkpoint bundles."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from detector.bundle import BundleError, load_experts, read_manifest, save_bundle, verify_files
from shell.cli import CliError
from detector.expert import Expert, param_bytes
from detector.presets import PRESETS
from detector.spec import EnsembleSpec, ExpertSpec, SpecError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="create, inspect and verify checkpoint bundles")
    bsub = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)

    init = bsub.add_parser("init", help="write a random-initialised bundle of a preset shape")
    init.add_argument("--preset", choices=sorted(PRESETS), required=True)
    init.add_argument("--out", type=Path, help="bundle directory to write")
    init.add_argument("--version", help="model version string (default: <preset>-untrained)")
    init.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    init.add_argument(
        "--from-weights", action="append", default=[], metavar="FAMILY=PATH",
        help="wrap local pretrained backbone weights: clip=FILE (an open_clip checkpoint) for the "
        "open_clip experts, siglip=DIR (a transformers model directory) for the transformers ones",
    )
    init.add_argument(
        "--dry-run", action="store_true",
        help="build on the meta device (no memory for weights), print sizes, write nothing",
    )
    init.set_defaults(func=_init)

    compose = bsub.add_parser(
        "compose", help="assemble experts (bundles of one or more experts) into one ensemble bundle")
    compose.add_argument("experts", nargs="+", type=Path, metavar="EXPERT_BUNDLE")
    compose.add_argument("--out", type=Path, required=True)
    compose.add_argument("--version", required=True, help="model version of the ensemble")
    compose.add_argument("--threshold", type=float, default=0.5)
    compose.set_defaults(func=_compose)

    combine = bsub.add_parser(
        "combine-adapters", help="put the experts of several adapter files into one adapter")
    combine.add_argument("adapters", nargs="+", type=Path, metavar="ADAPTER")
    combine.add_argument("--out", type=Path, required=True)
    combine.add_argument("--version", required=True, help="model version of the ensemble")
    combine.add_argument("--threshold", type=float, default=0.5)
    combine.set_defaults(func=_combine_adapters)

    apply = bsub.add_parser(
        "from-adapter", help="build a full bundle from an adapter and its pretrained backbone file")
    apply.add_argument("adapter", type=Path)
    apply.add_argument("--backbone", type=Path, required=True,
                       help="the pretrained backbone file the adapter was trained from")
    apply.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    apply.set_defaults(func=_from_adapter)

    inspect = bsub.add_parser("inspect", help="print a bundle's manifest and verify its files")
    inspect.add_argument("bundle", type=Path)
    inspect.set_defaults(func=_inspect)


def _pretrained_paths(items: list[str]) -> dict[str, Path]:
    families = {"clip": "open_clip", "siglip": "transformers"}
    out = {}
    for item in items:
        family, _, path = item.partition("=")
        if family not in families or not path:
            raise CliError(f"--from-weights takes clip=FILE or siglip=DIR, got {item!r}")
        out[families[family]] = Path(path)
    return out


def _build(spec: ExpertSpec, pretrained: dict[str, Path]) -> Expert:
    return Expert.build(spec, pretrained.get(spec.backbone.backend))


def _size_table(experts: list[Expert]) -> list[dict]:
    return [
        {
            "expert": e.spec.name,
            "backbone": f"{e.spec.backbone.backend}:{e.spec.backbone.model}",
            "params": sum(p.numel() for p in e.parameters()),
            "bytes_fp32": param_bytes(e, torch.float32),
            "bytes_bf16": param_bytes(e, torch.bfloat16),
        }
        for e in experts
    ]


def _print_sizes(rows: list[dict]) -> None:
    print(f"{'expert':<18} {'backbone':<36} {'params':>13} {'fp32 MB':>10} {'bf16 MB':>10}")
    for r in rows:
        print(f"{r['expert']:<18} {r['backbone']:<36} {r['params']:>13,} "
              f"{r['bytes_fp32'] / 1e6:>10.1f} {r['bytes_bf16'] / 1e6:>10.1f}")
    print(f"{'total':<55} {sum(r['params'] for r in rows):>13,} "
          f"{sum(r['bytes_fp32'] for r in rows) / 1e6:>10.1f} "
          f"{sum(r['bytes_bf16'] for r in rows) / 1e6:>10.1f}")


def _init(args: argparse.Namespace) -> int:
    version = args.version or f"{args.preset}-untrained"
    ensemble: EnsembleSpec = PRESETS[args.preset](version)
    pretrained = _pretrained_paths(args.from_weights)
    if args.dry_run:
        with torch.device("meta"):
            experts = [Expert.build(s) for s in ensemble.experts]
        _print_sizes(_size_table(experts))
        return 0
    if args.out is None:
        raise CliError("--out is required unless --dry-run")
    torch.manual_seed(args.seed)
    try:
        experts = [_build(s, pretrained) for s in ensemble.experts]
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from exc
    ensemble = dataclasses.replace(ensemble, experts=tuple(e.spec for e in experts))
    provenance = {
        "preset": args.preset,
        "seed": args.seed,
        "pretrained": {k: str(v) for k, v in pretrained.items()},
        "heads": "random-initialised",
    }
    manifest = save_bundle(args.out, ensemble, experts, provenance)
    _print_sizes(_size_table(experts))
    print(f"wrote {args.out} (model version {version}, digest {manifest.digest[:16]})")
    return 0


def _compose(args: argparse.Namespace) -> int:
    experts, sources = [], []
    try:
        for path in args.experts:
            manifest = read_manifest(path)
            experts.extend(load_experts(path, manifest))
            sources.append({"bundle": str(path), "model_version": manifest.ensemble.version,
                            "digest": manifest.digest, "provenance": manifest.provenance})
        ensemble = EnsembleSpec(tuple(e.spec for e in experts), args.threshold, args.version)
    except (BundleError, SpecError) as exc:
        raise CliError(f"{type(exc).__name__}: {exc}") from exc
    manifest = save_bundle(args.out, ensemble, experts, {"composed_from": sources})
    _print_sizes(_size_table(experts))
    print(f"wrote {args.out} (model version {args.version}, digest {manifest.digest[:16]})")
    return 0


def _combine_adapters(args: argparse.Namespace) -> int:
    from detector.adapter import AdapterError, combine_adapters

    try:
        path = combine_adapters(args.adapters, args.out, args.version, args.threshold)
    except AdapterError as exc:
        raise CliError(str(exc)) from exc
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _from_adapter(args: argparse.Namespace) -> int:
    from detector.adapter import build_from_adapter

    if not args.backbone.is_file():
        raise CliError(f"{args.backbone}: no such backbone file")
    try:
        manifest = build_from_adapter(args.adapter, args.backbone, args.out)
    except (BundleError, SpecError) as exc:
        raise CliError(str(exc)) from exc
    print(json.dumps({"bundle": str(args.out), "model_version": manifest.ensemble.version,
                      "experts": [e.name for e in manifest.ensemble.experts],
                      "digest": manifest.digest}, indent=2))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    try:
        manifest = read_manifest(args.bundle)
        print((args.bundle / "manifest.json").read_text())
        verify_files(args.bundle, manifest)
    except BundleError as exc:
        raise CliError(f"{type(exc).__name__}: {exc}") from exc
    summary = {
        "model_version": manifest.ensemble.version,
        "threshold": manifest.ensemble.threshold,
        "experts": [e.name for e in manifest.ensemble.experts],
        "digest": manifest.digest,
        "verified": True,
    }
    print(json.dumps(summary, indent=2))
    return 0
