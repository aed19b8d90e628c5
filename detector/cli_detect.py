"""`featdistill detect`: judge image files and folders with a bundle, resumably."""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

from tqdm import tqdm

from detector.bundle import BundleError
from detector.images import IMAGE_SUFFIXES, ImageDecodeError, ImageLimits, load_image_file
from detector.precision import PRECISION_HELP, PRECISIONS
from detector.preprocess import TTA_HELP, TTA_VIEWS
from detector.results_file import ResultsFile, ResultsFileError
from detector.service import Detector
from shell.cli import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="judge image files and folders (recursive)")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--bundle", type=Path, required=True, help="checkpoint bundle directory")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", type=Path, help="results file, .jsonl or .csv (resumable); default: stdout")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--dtype", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument("--uncertain-spread", type=float, metavar="SPREAD",
                   help="label 'uncertain' when the experts' P(fake) spread exceeds SPREAD "
                   "(the worker's FEATDISTILL_UNCERTAIN_SPREAD); default: never")
    p.add_argument("--tta", type=int, choices=sorted(TTA_VIEWS), default=1, metavar="N", help=TTA_HELP)
    p.add_argument("--fsync-every", type=int, default=64, help="fsync the output every N rows")
    p.add_argument("--max-pixels", type=int, default=ImageLimits().max_pixels)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def collect_images(paths: Sequence[Path]) -> list[Path]:
    """Files as given (whatever their suffix), folders walked recursively for image suffixes."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            )
        elif path.exists():
            found.append(path)
        else:
            raise CliError(f"{path}: no such file or directory")
    seen: set[Path] = set()
    return [p for p in found if not (p in seen or seen.add(p))]


def _batches(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Stdout:
    """The ResultsFile interface for printing JSON lines, without resume."""

    def __init__(self) -> None:
        self.done: set[str] = set()

    def write(self, record: dict) -> None:
        print(json.dumps(record), flush=True)

    def close(self) -> None:
        pass


def run(args: argparse.Namespace) -> int:
    if args.uncertain_spread is not None and not 0.0 <= args.uncertain_spread <= 1.0:
        raise CliError(f"--uncertain-spread must be in [0, 1], got {args.uncertain_spread}")
    images = collect_images(args.paths)
    try:
        detector = Detector.load(args.bundle, device=args.device, dtype=args.dtype,
                                 batch_size=args.batch_size, tta=args.tta)
    except BundleError as exc:
        raise CliError(f"{type(exc).__name__}: {exc}") from exc
    try:
        out = (
            ResultsFile(args.out, detector.digest, detector.version,
                        [e.spec.name for e in detector.experts], args.fsync_every)
            if args.out else _Stdout()
        )
    except ResultsFileError as exc:
        raise CliError(str(exc)) from exc
    todo = [p for p in images if str(p) not in out.done]
    limits = ImageLimits(max_pixels=args.max_pixels)
    side = detector.decode_side  # decode as the worker does: no bigger than the experts need
    failed = 0
    bar = tqdm(total=len(images), initial=len(images) - len(todo), unit="img",
               disable=args.no_progress, file=sys.stderr, desc="detect")
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            for batch in _batches(todo, args.batch_size):
                decoded = list(pool.map(lambda p: _decode(p, limits, side), batch))
                good = [(p, img) for p, img in zip(batch, decoded) if not isinstance(img, str)]
                scores = detector.predict([img for _, img in good], args.uncertain_spread)
                by_path = {str(p): s for (p, _), s in zip(good, scores)}
                for path, img in zip(batch, decoded):
                    record = _record(path, by_path.get(str(path)), img, detector.version)
                    failed += record["error"] is not None
                    out.write(record)
                bar.update(len(batch))
    finally:
        bar.close()
        out.close()
    print(f"judged {len(todo) - failed}, errors {failed}, skipped (already done) "
          f"{len(images) - len(todo)}", file=sys.stderr)
    return 0


def _decode(path: Path, limits: ImageLimits, min_side: int | None = None):
    try:
        return load_image_file(path, limits, min_side)
    except ImageDecodeError as exc:
        return f"{exc.kind}: {exc}"


def _record(path: Path, score, decoded, version: str) -> dict:
    if score is None:
        return {"path": str(path), "score": None, "label": None, "experts": None,
                "model_version": version, "error": decoded}
    return {"path": str(path), "score": round(score.score, 6), "label": score.label,
            "experts": {k: round(v, 6) for k, v in score.experts.items()},
            "model_version": version, "error": None}
