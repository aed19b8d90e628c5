"""structlog setup: JSON lines in production, a readable console locally.

Every line goes through the same renderer, including those of libraries that log through the
standard library (kafka-python, urllib3, redis): a JSON log stays machine-readable. Fields bound
with `configure_logging(..., worker_id=...)` are added to every line, whichever thread logs it
(kafka-python runs rebalance callbacks and its own logging on other threads, where context
variables bound on the main thread are not seen).

Fields about one message (its id, `trace_id` and carried headers from worker.headers) are passed
to each log call about it rather than bound as context variables: the loop interleaves many
messages on one thread, and a value passed per call cannot leak onto the next message's lines.
"""
from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure_logging(fmt: str = "json", level: str = "info", **static: str) -> None:
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )

    def add_static(logger, method, event):
        for key, value in static.items():
            event.setdefault(key, value)
        return event

    shared = [
        structlog.contextvars.merge_contextvars,
        add_static,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # The standard library's records (kafka-python and others) through the same renderer, with
    # the library logger's name; their chatter is kept at warnings.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.WARNING, _LEVELS[level]))
