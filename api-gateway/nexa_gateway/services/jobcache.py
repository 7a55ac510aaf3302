"""A process-local cache of job status bodies, for the status-polling hot path.

Every change this process makes to a job invalidates its entry at once, so a
client polling this gateway never sees its own writes go backwards. Entries
also expire after ``ttl`` seconds, which bounds how stale a read can be when
another gateway replica changed the job. A per-job generation number stops a
slow reader from storing a body older than an invalidation it raced with.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable


class JobCache:
    def __init__(self, ttl: float, max_entries: int = 50_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[str, bytes, float]] = {}
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, tenant_id: str, job_id: str) -> bytes | None:
        """The cached body when fresh and owned by ``tenant_id``, else None."""
        if self.ttl <= 0:
            return None
        with self._lock:
            entry = self._entries.get(job_id)
        if entry is None or entry[0] != tenant_id or time.monotonic() - entry[2] > self.ttl:
            return None
        return entry[1]

    def generation(self, job_id: str) -> int:
        """Read before loading from the database; pass to ``put``."""
        with self._lock:
            return self._generations.get(job_id, 0)

    def put(self, tenant_id: str, job_id: str, body: bytes, generation: int) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if self._generations.get(job_id, 0) != generation:
                return  # invalidated while we were reading: our body may predate the change
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[job_id] = (tenant_id, body, time.monotonic())

    def invalidate(self, job_ids: Iterable[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._entries.pop(job_id, None)
                self._generations[job_id] = self._generations.get(job_id, 0) + 1
            if len(self._generations) > 4 * self.max_entries:
                # Generations only need to outlive in-flight reads; a reset costs at most one stale put.
                self._generations.clear()
                self._entries.clear()
