"""`featdistill worker`: the composition root. Reads settings once, builds the adapters, runs the
pipeline until SIGTERM/SIGINT, then drains (finish the partial batch, publish, commit) and exits 0.

If the drain overruns the grace period the process exits non-zero without committing further:
the uncommitted messages are replayed by the next owner (at-least-once), never lost.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

import structlog

from detector.bundle import BundleError
from detector.service import Detector
from detector.spec import SpecError
from shell.cli import CliError
from worker.adapters.fetch import ImageFetcher
from worker.adapters.kafka_io import KafkaOutage, KafkaReferenceSource, KafkaVerdictSink
from worker.adapters.kafka_security import KafkaRefused
from worker.adapters.redis_cache import RedisVerdictCache
from worker.health import HealthServer
from worker.logs import configure_logging
from worker.metrics import Metrics
from worker.pipeline import Pipeline
from worker.settings import SettingsError, WorkerConfig, load_settings

log = structlog.get_logger("featdistill.worker")
DRAIN_OVERRUN_EXIT = 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker", help="run the streaming worker (settings from FEATDISTILL_* variables)",
        description="Consume image references from Kafka, judge them, publish verdicts. "
        "Every setting is an environment variable; see README.",
    )
    p.set_defaults(func=_run_from_environment)


def _run_from_environment(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    return run_worker(settings.configs())


def run_worker(cfg: WorkerConfig, stop: threading.Event | None = None) -> int:
    configure_logging(cfg.log_format, cfg.log_level, worker_id=cfg.pipeline.worker_id)
    stop = stop or threading.Event()
    _install_signal_handlers(stop)
    metrics = Metrics()
    detector = load_detector(cfg)
    log.info("bundle_loaded", model_version=detector.version, digest=detector.digest[:16],
             device=str(detector.device), param_bytes=detector.param_bytes())
    try:  # a broker that is down at start-up is waited out for cfg.kafka.outage_s
        source = KafkaReferenceSource.connect(cfg.kafka, cfg.pipeline.input_topic)
        sink = KafkaVerdictSink.connect(cfg.kafka)
    except (KafkaOutage, KafkaRefused) as exc:  # refused: credentials or certificates, not retried
        raise CliError(f"FEATDISTILL_KAFKA_BOOTSTRAP={cfg.kafka.bootstrap}: {exc}") from None
    cache = RedisVerdictCache.from_url(cfg.redis_url, cfg.cache_ttl_s, metrics,
                                       security=cfg.redis_security)
    pipeline = Pipeline(cfg.pipeline, source, ImageFetcher(cfg.fetch), cache, sink, detector, metrics)
    source.subscribe(pipeline.on_revoke)
    health = HealthServer(metrics, pipeline.ready, cfg.metrics_port).start()
    log.info("worker_started", input_topic=cfg.pipeline.input_topic, metrics_port=health.port)
    try:
        status = _serve(pipeline, stop, cfg.shutdown_grace_s)
    finally:
        source.close()
        sink.close()
        pipeline.close()
        health.stop()
    log.info("worker_stopped", messages=metrics.value("featdistill_messages_total", outcome="verdict")
             + metrics.value("featdistill_messages_total", outcome="dead_letter"))
    return status


def _serve(pipeline: Pipeline, stop: threading.Event, grace_s: float) -> int:
    """Step until stopped, then drain. Exit status 1, with nothing committed past the failure,
    if Kafka stays away longer than the outage budget or if anything unexpected is raised."""
    try:
        while not stop.is_set():
            pipeline.step()
        log.info("draining", grace_s=grace_s)
        watchdog = threading.Timer(grace_s, _drain_overran)
        watchdog.daemon = True
        watchdog.start()
        # Work that would not finish within the grace is abandoned, uncommitted (replayed by the
        # next owner), so that what did finish is published and committed in time.
        pipeline.drain(fetch_timeout_s=grace_s * 0.3, judge_s=grace_s * 0.4)
        watchdog.cancel()
    except KafkaOutage as exc:
        log.error("kafka_outage", error=str(exc), note="exiting; uncommitted work is replayed")
        return 1
    except Exception:
        log.exception("worker_failed", note="a bug, not bad input: exiting with nothing "
                      "committed past it")
        raise
    return 0


def load_detector(cfg: WorkerConfig) -> Detector:
    """The bundle, or one line naming the setting at fault (CliError: exit 2, no traceback)."""
    try:
        return Detector.load(cfg.bundle, device=cfg.device, dtype=cfg.dtype,
                             batch_size=cfg.pipeline.batch.max_batch)
    except (BundleError, SpecError, OSError) as exc:  # OSError: not a folder, unreadable, ...
        raise CliError(f"FEATDISTILL_BUNDLE={cfg.bundle}: {exc}") from None
    except ValueError as exc:  # resolve_precision: float16 on a CPU, ...
        raise CliError(f"FEATDISTILL_DTYPE={cfg.dtype}: {exc}") from None
    except RuntimeError as exc:  # torch: no such CUDA device, ...
        raise CliError(f"FEATDISTILL_DEVICE={cfg.device}: {exc}") from None


def _drain_overran() -> None:
    log.error("drain_overran_grace_period", note="exiting without committing further")
    sys.stderr.flush()
    os._exit(DRAIN_OVERRUN_EXIT)


def _install_signal_handlers(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signals only reach the main thread; embedded runs stop through the event

    def handle(signum, frame):
        log.info("signal_received", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
