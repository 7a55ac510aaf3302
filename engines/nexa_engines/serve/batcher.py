"""Request batching for the serving process: requests that arrive together decode together.

A single scheduler thread takes the first waiting request, gathers more for up to
``max_wait_s`` (or until ``max_batch_size``), and runs them as one batch through
``generate`` (the KV-cached decode loop). Each request gets a ``Ticket`` whose
queue receives text pieces as they are produced, then the final result, so
streaming and non-streaming callers share the same path.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nexa_engines.models.generation import GenerationRequest, GenerationResult

GenerateFn = Callable[[Sequence[GenerationRequest], Callable[[int, str], None]], list[GenerationResult]]


@dataclass
class Ticket:
    """A submitted request: pieces arrive on ``events`` as ("token", str), then ("done", result) or ("error", str)."""

    request: GenerationRequest
    events: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    submitted_at: float = field(default_factory=time.monotonic)

    def result(self, timeout: float | None = None) -> GenerationResult:
        """Block until the request is done; raises ``RuntimeError`` with the batch's error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            kind, value = self.events.get(timeout=left)
            if kind == "done":
                assert isinstance(value, GenerationResult)
                return value
            if kind == "error":
                raise RuntimeError(str(value))


@dataclass
class BatchStats:
    """How the scheduler has batched so far."""

    batches: int = 0
    requests: int = 0
    largest: int = 0

    def as_dict(self) -> dict[str, float]:
        return {
            "batches": self.batches,
            "requests": self.requests,
            "largest_batch": self.largest,
            "mean_batch": round(self.requests / self.batches, 3) if self.batches else 0.0,
        }


class BatchScheduler:
    """Collects tickets into batches and runs them one batch at a time on a worker thread."""

    def __init__(self, generate: GenerateFn, *, max_batch_size: int = 16, max_wait_s: float = 0.01) -> None:
        self._generate = generate
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._waiting: queue.Queue[Ticket | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="nexa-batcher", daemon=True)
        self._stopped = threading.Event()
        self.stats = BatchStats()

    def start(self) -> BatchScheduler:
        """Start the scheduler thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Finish the current batch and stop; waiting tickets get an error."""
        self._stopped.set()
        self._waiting.put(None)
        self._thread.join(timeout=30)
        while True:
            try:
                ticket = self._waiting.get_nowait()
            except queue.Empty:
                break
            if ticket is not None:
                ticket.events.put(("error", "the server is shutting down"))

    def submit(self, request: GenerationRequest) -> Ticket:
        """Queue a request; its ticket fills as the batch it joins runs."""
        if self._stopped.is_set():
            raise RuntimeError("the server is shutting down")
        ticket = Ticket(request)
        self._waiting.put(ticket)
        return ticket

    def next_batch(self) -> list[Ticket]:
        """The tickets of the next batch: the first waiting one plus whatever arrives within ``max_wait_s``."""
        first = self._waiting.get()
        if first is None:
            return []
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            left = deadline - time.monotonic()
            try:
                ticket = self._waiting.get(timeout=max(0.0, left)) if left > 0 else self._waiting.get_nowait()
            except queue.Empty:
                break
            if ticket is None:
                self._waiting.put(None)  # keep the stop signal for the loop
                break
            batch.append(ticket)
        return batch

    def run_batch(self, batch: list[Ticket]) -> None:
        """Generate for ``batch`` and deliver pieces and results to its tickets."""
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))

        def on_token(row: int, text: str) -> None:
            batch[row].events.put(("token", text))

        try:
            results = self._generate([t.request for t in batch], on_token)
        except Exception as exc:  # one bad batch must not kill the server: every caller gets the error
            for ticket in batch:
                ticket.events.put(("error", f"generation failed: {type(exc).__name__}: {exc}"))
            return
        for ticket, result in zip(batch, results, strict=True):
            ticket.events.put(("done", result))

    def _loop(self) -> None:
        while not self._stopped.is_set():
            batch = self.next_batch()
            if not batch:
                return
            self.run_batch(batch)
