"""What /readyz reports: the worker owns partitions and can do its job.

Not ready while a publish has been stuck for longer than `stuck_s` (the broker is away and the
worker is waiting it out), after a dropped commit until the next one succeeds, or when dead
letters are more than `max_dead_letter_share` of the last minute's results: that is rarely bad
input, more often a worker that cannot reach its images (a broken proxy, lost S3 credentials),
and an alert on readiness catches it before the topic drains into the dead-letter topic.

The loop's thread writes, the health server's thread reads; each field is one assignment.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ReadinessPolicy:
    max_dead_letter_share: float = 0.5  # of the window's results; 1.0 turns the check off
    min_results: int = 20  # fewer results in the window say nothing about a share
    window_s: float = 60.0
    stuck_s: float = 10.0  # a publish taking longer than this means the broker is away


class Readiness:
    def __init__(self, policy: ReadinessPolicy = ReadinessPolicy(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._results: collections.deque[tuple[float, bool]] = collections.deque()
        self._publishing_since: float | None = None
        self._commit_ok = True
        self.reason = "starting"

    def result(self, dead_letter: bool) -> None:
        now = self._clock()
        self._results.append((now, dead_letter))
        self._forget_before(now - self.policy.window_s)  # bounded even if nobody asks /readyz

    def _forget_before(self, t: float) -> None:
        while self._results and self._results[0][0] < t:
            self._results.popleft()

    def publishing(self, busy: bool) -> None:
        self._publishing_since = self._clock() if busy else None

    def committed(self, ok: bool) -> None:
        self._commit_ok = ok

    def ready(self, assigned: bool) -> bool:
        self.reason = self._why_not(assigned)
        return not self.reason

    def _why_not(self, assigned: bool) -> str:
        now, p = self._clock(), self.policy
        since = self._publishing_since
        if since is not None and now - since > p.stuck_s:
            return f"publishing for {now - since:.0f} s"
        if not self._commit_ok:
            return "last commit dropped"
        if not assigned:
            return "no partitions assigned"
        self._forget_before(now - p.window_s)
        results = list(self._results)  # a copy: the loop's thread appends meanwhile
        dead = sum(1 for _, d in results if d)
        if len(results) >= p.min_results and dead > p.max_dead_letter_share * len(results):
            return f"{dead} of the last {len(results)} results were dead letters"
        return ""
