"""Outage bookkeeping shared by the Redis-backed platform services (cache, rate limiter).

One warning when a backend starts failing and one info line when it answers again, however
many requests hit it in between; a short back-off keeps a dead Redis (1 s socket timeouts)
from adding its timeout to every request during the outage.
"""

from __future__ import annotations

import time
from typing import Any


class OutageTracker:
    def __init__(self, component: str, logger: Any, *, retry_seconds: float) -> None:
        self.component = component
        self.retry_seconds = retry_seconds
        self._log = logger
        self._down_since: float | None = None
        self._retry_at = 0.0
        #: Backend calls that failed, and distinct outages (failure after success).
        self.failures = 0
        self.outages = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def should_try(self) -> bool:
        """Whether to call the backend now (always, unless it failed moments ago)."""
        return self._down_since is None or time.monotonic() >= self._retry_at

    def failure(self, error: BaseException) -> None:
        now = time.monotonic()
        self.failures += 1
        self._retry_at = now + self.retry_seconds
        if self._down_since is None:
            self._down_since = now
            self.outages += 1
            self._log.warning(
                f"{self.component}_backend_unavailable",
                error=type(error).__name__,
                detail=str(error)[:200],
                retry_seconds=self.retry_seconds,
            )

    def success(self) -> None:
        if self._down_since is not None:
            downtime = time.monotonic() - self._down_since
            self._down_since = None
            self._log.info(
                f"{self.component}_backend_recovered", downtime_seconds=round(downtime, 3)
            )
