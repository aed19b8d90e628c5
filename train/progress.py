"""Progress bars for the long jobs (evaluation, view banks, packs, epochs).

On a terminal: a live tqdm bar. Where stderr is a file or a pipe (a job under nohup, CI), tqdm's
own default (`disable=None`) prints nothing at all, so an hour-long evaluation on a CPU left an
empty log and no way to tell how far it was. There it prints a plain line at most once a minute
instead: few enough for a log, enough to estimate the time left.
"""
from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")
LOG_INTERVAL_S = 60.0


def progress_bar(iterable: Iterable[T], desc: str, file=None, **kwargs) -> tqdm:
    """tqdm over `iterable`, live on a terminal and one line a minute elsewhere."""
    stream = file if file is not None else sys.stderr
    live = hasattr(stream, "isatty") and stream.isatty()
    if not live:
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", LOG_INTERVAL_S)
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("ncols", 100)
    return tqdm(iterable, desc=desc, file=stream, dynamic_ncols=live, **kwargs)
