"""The command line of the git-repository sources (train.sources.git_import): find each source's local
clone, import it if its stamp is stale, then rewrite the index (train.csv, heldout.csv,
eval_only.csv) over every imported source, package and git alike.

    python -m train.sources.git_cli --list
    python -m train.sources.git_cli --git-root ~/src/corpus [--only NAME ...] [--force] [--report]

The user clones the repositories (see train/sources/DATACARD.md for the `git clone` lines) into one folder,
as <owner>+<name>, <owner>/<name> or <name>; nothing is downloaded here.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

from train.sources.fetch import SourceError, chosen_sources
from train.sources.files import default_root, read_rows, write_index
from train.sources.git_import import import_git, stamp_matches
from train.sources.git_sources import GIT_REGISTRY, GIT_SOURCES
from train.sources.gitread import find_local, refuse_reserved
from train.sources.package_sources import REGISTRY
from train.sources.report import report, summarise_rows


def default_git_roots() -> list[Path]:
    env = os.environ.get("FEATDISTILL_GIT_ROOT")
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    cache = Path(os.environ.get("FEATDISTILL_CACHE") or Path.home() / ".cache" / "featdistill")
    return [cache / "git"]


def present_sources(root: Path) -> list[str]:
    """Names of the known sources (package and git) that have a manifest under root."""
    names = set(REGISTRY) | set(GIT_REGISTRY)
    return sorted(n for n in names if (root / n / "manifest.csv").is_file())


def clone_command(src, root: Path) -> str:
    """The shell line that clones one source's repository and checks out its pinned commit."""
    owner, name = src.repo.split("/", 1)
    dest = root / f"{owner}+{name}"
    return (f"git clone https://github.com/{src.repo}.git {dest} && "
            f"git -C {dest} checkout -q {src.commit}")


def run_source(src, roots: list[Path], root: Path, force: bool) -> tuple[list[dict], str, Counter]:
    refuse_reserved(src.repo)
    if not force and stamp_matches(root / src.name, src):
        return read_rows(root / src.name / "manifest.csv"), "up to date", Counter()
    git_dir = find_local(src.repo, roots)
    if git_dir is None:
        raise SourceError(f"{src.name}: no clone of {src.repo} under {[str(r) for r in roots]}; "
                          f"git clone https://github.com/{src.repo} && git -C {src.repo.split('/')[1]} "
                          f"checkout {src.commit}")
    stats: Counter = Counter()
    return import_git(src, git_dir, root, stats), "imported", stats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.sources.git_cli",
                                     description="import training images from pinned commits of "
                                                 "local git clones")
    parser.add_argument("--list", action="store_true", help="list the sources and exit")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these sources")
    parser.add_argument("--git-root", type=Path, action="append", default=None,
                        help="folder holding the clones (repeatable; default $FEATDISTILL_GIT_ROOT "
                             "or $FEATDISTILL_CACHE/git)")
    parser.add_argument("--root", type=Path, default=None,
                        help="output folder (default $FEATDISTILL_CACHE/sources)")
    parser.add_argument("--force", action="store_true", help="re-import even if up to date")
    parser.add_argument("--report", action="store_true", help="print the index's distributions")
    parser.add_argument("--clone-commands", action="store_true",
                        help="print the git commands that make the clones the import reads")
    args = parser.parse_args(argv)

    if args.clone_commands:
        root = (args.git_root or default_git_roots())[0]
        for s in GIT_SOURCES:
            print(clone_command(s, root))
        return 0
    if args.list:
        for s in GIT_SOURCES:
            labels = "+".join(sorted({r.label for r in s.rules}))
            print(f"{s.name:28s} {s.repo}@{s.commit[:12]} {labels:9s} {s.split:8s} "
                  f"{'' if s.default else 'opt-in '}licence: {s.licence}")
        return 0
    chosen = chosen_sources(parser, GIT_REGISTRY, GIT_SOURCES, args.only)
    roots = [r.expanduser().resolve() for r in (args.git_root or default_git_roots())]
    root = (args.root or default_root()).resolve()
    root.mkdir(parents=True, exist_ok=True)
    failed = []
    for src in chosen:
        t0 = time.monotonic()
        try:
            rows, state, stats = run_source(src, roots, root, args.force)
        except SourceError as exc:
            print(f"FAILED {src.name}: {exc}", file=sys.stderr)
            failed.append(src.name)
            continue
        s = summarise_rows(rows)
        dropped = " ".join(f"{k}={v}" for k, v in sorted(stats.items()) if k != "candidates")
        print(f"{src.name:28s} {s['images']:6d} {s['label']} {src.split:8s} {state:10s} "
              f"{time.monotonic() - t0:6.1f}s {dropped}", flush=True)
    index = write_index(root, present_sources(root))
    print(f"train.csv: {index['train']['images']} {index['train']['label']}; heldout.csv: "
          f"{index['heldout']['images']} {index['heldout']['label']}; removed: "
          f"{index['removed_as_in_eval']} in eval, {index['removed_as_in_heldout']} in heldout, "
          f"{index['removed_cross_source_duplicate']} cross-source duplicates, "
          f"{index['removed_label_conflict']} label conflicts; {root}")
    if args.report:
        print(report(root, "train.csv"))
        print(report(root, "heldout.csv"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
