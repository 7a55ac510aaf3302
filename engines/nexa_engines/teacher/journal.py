"""Per-sample checkpoints of teacher work, kept in the artifact store so any later attempt resumes.

Finished samples are flushed as small shard artifacts (kind ``distill``, one per
flush) whose manifest names the job; each line is keyed by the sample's index.
A new attempt reads every shard of its job and skips those indices, so a killed
or failed run resumes with no duplicate and no missing sample: an index lost in
flight (answered but not yet flushed) is simply asked again, and an index that
appears in two shards (a flush retried) is kept once.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from nexa.ids import new_id
from nexa_engines.engine import EngineContext
from nexa_store.base import ArtifactError

SHARD_FILE = "samples.jsonl"


class SampleJournal:
    """Finished samples by index: loaded from earlier attempts, flushed every ``flush_every`` or ``flush_seconds``."""

    def __init__(self, ctx: EngineContext, *, flush_every: int = 64, flush_seconds: float = 10.0) -> None:
        self.ctx = ctx
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self.done: dict[int, dict[str, Any]] = {}
        self._pending: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self.shards_read = 0
        self.shards_written = 0

    def load(self) -> int:
        """Read every shard an earlier attempt of this job wrote; returns how many samples were done."""
        store = self.ctx.store
        for artifact_id in store.list_ids("distill"):
            try:
                manifest = store.read_manifest(artifact_id, verify=False)
                if manifest.job_id != self.ctx.job_id or not manifest.config.get("journal"):
                    continue
                text = store.read_file(artifact_id, SHARD_FILE).decode("utf-8")
            except ArtifactError:
                continue  # an unreadable shard's samples are asked again
            self.shards_read += 1
            for line in text.splitlines():
                if line.strip():
                    record = json.loads(line)
                    self.done.setdefault(int(record["index"]), record)
        return len(self.done)

    def add(self, record: dict[str, Any]) -> None:
        """Record one finished sample (``record["index"]`` set); flushes when due."""
        with self._lock:
            if int(record["index"]) in self.done:
                return
            self.done[int(record["index"])] = record
            self._pending.append(record)
            due = (
                len(self._pending) >= self.flush_every
                or time.monotonic() - self._last_flush >= self.flush_seconds
            )
        if due:
            self.flush()

    def flush(self) -> None:
        """Commit the samples not yet in the store as one shard."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._last_flush = time.monotonic()
        if not batch:
            return
        shard_id = new_id("job")  # the "distill" kind is named with job-style ids
        with self.ctx.store.begin("distill", shard_id) as writer:
            Path(writer.path, SHARD_FILE).write_text(
                "".join(json.dumps(r) + "\n" for r in batch), encoding="utf-8"
            )
            writer.commit(
                job_id=self.ctx.job_id,
                attempt=self.ctx.attempt,
                tenant_id=self.ctx.tenant_id,
                config={"journal": True, "samples": len(batch)},
            )
        self.shards_written += 1
