"""Per-key token buckets: a burst up to the per-minute limit, refilled continuously."""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one token for ``key``; 0.0 when allowed, else seconds until the next token."""
        now = time.monotonic()
        with self._lock:
            tokens, stamp = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - stamp) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def refund(self, key: str) -> None:
        """Give back a token taken by a caller that did not, in the end, serve the request."""
        with self._lock:
            tokens, stamp = self._buckets.get(key, (self.capacity, time.monotonic()))
            self._buckets[key] = (min(self.capacity, tokens + 1.0), stamp)

    @staticmethod
    def retry_after_header(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
