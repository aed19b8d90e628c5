"""`featdistill`: one command, subcommands contributed by each part of the project.

Subcommands are found through the `featdistill.commands` entry-point group (see pyproject.toml):
each entry is a `register(subparsers)` function. The dispatcher therefore never imports the worker
or the trainer by name, and a part that is not installed simply offers no subcommand.
"""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featdistill", description="Detect AI-generated images with a FeatDistill ensemble."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for ep in sorted(entry_points(group="featdistill.commands"), key=lambda e: e.name):
        try:
            register = ep.load()
        except (ImportError, AttributeError) as exc:
            # A part whose optional dependencies are missing still shows up, and says why.
            _unavailable(sub, ep.name, exc)
            continue
        register(sub)
    return parser


def _unavailable(sub, name: str, exc: Exception) -> None:
    def fail(args):
        raise CliError(f"this command is unavailable here ({type(exc).__name__}: {exc})")

    p = sub.add_parser(name, help=f"(unavailable: {exc})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=fail)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except CliError as exc:
        print(f"featdistill {args.command}: error: {exc}", file=sys.stderr)
        return 2


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2, no traceback."""


if __name__ == "__main__":
    # `python -m shell.cli` runs this file as __main__, a second copy of the module: call the
    # real one, so subcommands' CliError (imported from shell.cli) is the class caught here.
    from shell.cli import main as _main

    sys.exit(_main())
