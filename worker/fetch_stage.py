"""The fetch stage: fetch, decode, hash and preprocess run in a thread pool while the loop goes on
polling, batching and publishing; finished jobs are collected as they complete.

The loop never waits on one slow URL: `collect` returns whatever finished within its timeout,
so the batch deadline and Kafka's poll interval hold however slow the fetches are. Memory is
bounded by what the loop lets in (`Pipeline` counts messages and model-input bytes in flight),
and by `threads` here for what is being fetched and decoded right now.
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Generic, TypeVar

J = TypeVar("J")  # a job
F = TypeVar("F")  # what the work returns for it (None on success, or an expected failure)


class FetchStage(Generic[J, F]):
    def __init__(self, work: Callable[[J], F], threads: int) -> None:
        self._work = work
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="fetch")
        self._running: dict[Future, J] = {}

    def __len__(self) -> int:
        return len(self._running)

    def submit(self, job: J) -> None:
        self._running[self._pool.submit(self._work, job)] = job

    def collect(self, timeout_s: float) -> list[tuple[J, F]]:
        """Jobs finished within `timeout_s` (0: only those already done), with their results.

        An exception other than the work's expected failures (which it returns, not raises) is a
        bug: it is raised here, in the loop's thread, and stops the worker before anything past
        that message is committed.
        """
        if not self._running:
            return []
        done, _ = wait(self._running, timeout=max(0.0, timeout_s), return_when=FIRST_COMPLETED)
        if done and timeout_s > 0:  # take whatever else finished meanwhile, without waiting
            done, _ = wait(self._running, timeout=0)
        return [(self._running.pop(future), future.result()) for future in done]

    def wait_all(self, timeout_s: float | None) -> list[tuple[J, F]]:
        """Everything finished within `timeout_s` (None: wait for all)."""
        if not self._running:
            return []
        done, _ = wait(self._running, timeout=timeout_s)
        return [(self._running.pop(future), future.result()) for future in done]

    def abandon(self, lost: Callable[[J], bool]) -> list[J]:
        """Stop tracking the jobs `lost` says to drop (cancelled if not started yet); a running
        one finishes in its thread and its result is ignored."""
        dropped = [(f, j) for f, j in self._running.items() if lost(j)]
        for future, _ in dropped:
            future.cancel()
            del self._running[future]
        return [j for _, j in dropped]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
