"""Request batching for the serving process: continuous batching over one running decode batch.

A single scheduler thread owns a ``Decoder`` (normally ``DecodeBatch``). When
idle it waits for the first request and gathers more for up to ``max_wait_s``;
while a batch runs, requests that arrived join it before the next decode step
(up to ``max_batch_size`` rows) and finished ones leave at once, so nobody waits
for a whole batch to end. Each request gets a ``Ticket`` whose queue receives
text pieces as they are produced, then the final result, so streaming and
non-streaming callers share the same path.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nexa_engines.models.generation import GenerationRequest, GenerationResult

GenerateFn = Callable[[Sequence[GenerationRequest], Callable[[int, str], None]], list[GenerationResult]]
TokenSink = Callable[[int, str], None]


class Decoder(Protocol):
    """A running batch rows join and leave between steps (``DecodeBatch`` is the real one)."""

    def __len__(self) -> int: ...

    def add(self, requests: Sequence[GenerationRequest], keys: Sequence[int]) -> None: ...

    def step(self) -> list[tuple[int, GenerationResult]]: ...

    def reset(self) -> None: ...


DecoderFactory = Callable[[TokenSink], Decoder]


class WholeBatchDecoder:
    """Adapts a run-to-completion ``generate`` function to ``Decoder``: one step runs every pending row to its end."""

    def __init__(self, generate: GenerateFn, on_token: TokenSink) -> None:
        self._generate = generate
        self._on_token = on_token
        self._pending: list[tuple[int, GenerationRequest]] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, requests: Sequence[GenerationRequest], keys: Sequence[int]) -> None:
        self._pending += list(zip(keys, requests, strict=True))

    def step(self) -> list[tuple[int, GenerationResult]]:
        pending, self._pending = self._pending, []
        keys = [k for k, _ in pending]
        results = self._generate([r for _, r in pending], lambda row, text: self._on_token(keys[row], text))
        return list(zip(keys, results, strict=True))

    def reset(self) -> None:
        self._pending = []


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
    """How the scheduler has batched so far (one step decodes one token for every row)."""

    steps: int = 0
    requests: int = 0
    largest: int = 0
    row_steps: int = 0  # sum of the batch size over all steps

    def as_dict(self) -> dict[str, float]:
        return {
            "steps": self.steps,
            "requests": self.requests,
            "largest_batch": self.largest,
            "mean_batch": round(self.row_steps / self.steps, 3) if self.steps else 0.0,
        }


class BatchScheduler:
    """Admits tickets into one running decode batch between steps, on a worker thread.

    ``decoder`` is a factory ``(on_token) -> Decoder``; without one, ``generate``
    (requests, on_token) -> results runs each admitted batch to completion.
    ``on_step(batch_size)`` and ``on_done(result)`` let the caller record metrics.
    """

    def __init__(
        self,
        generate: GenerateFn | None = None,
        *,
        decoder: DecoderFactory | None = None,
        max_batch_size: int = 16,
        max_wait_s: float = 0.01,
        on_step: Callable[[int], None] | None = None,
        on_done: Callable[[GenerationResult], None] | None = None,
    ) -> None:
        if decoder is not None:
            self._decoder: Decoder = decoder(self._deliver_token)
        elif generate is not None:
            self._decoder = WholeBatchDecoder(generate, self._deliver_token)
        else:
            raise ValueError("pass a decoder factory or a generate function")
        self._active: dict[int, Ticket] = {}
        self._next_key = 0
        self._on_step = on_step
        self._on_done = on_done
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
        """Tickets to admit now: while idle, block for one and gather more for ``max_wait_s``; else take what waits."""
        room = self.max_batch_size - len(self._decoder)
        batch: list[Ticket] = []
        if room <= 0:
            return batch
        if not self._active:
            first = self._waiting.get()
            if first is None:
                self._waiting.put(None)  # keep the stop signal for the loop
                return batch
            batch.append(first)
        deadline = time.monotonic() + (self.max_wait_s if not self._active else 0.0)
        while len(batch) < room:
            left = deadline - time.monotonic()
            try:
                ticket = self._waiting.get(timeout=left) if left > 0 else self._waiting.get_nowait()
            except queue.Empty:
                break
            if ticket is None:
                self._waiting.put(None)
                break
            batch.append(ticket)
        return batch

    def _deliver_token(self, key: int, text: str) -> None:
        ticket = self._active.get(key)
        if ticket is not None:
            ticket.events.put(("token", text))

    def admit(self, tickets: list[Ticket]) -> None:
        """Join ``tickets`` to the running batch; if their prefill fails only they get the error."""
        if not tickets:
            return
        keys = list(range(self._next_key, self._next_key + len(tickets)))
        self._next_key += len(tickets)
        self._active.update(zip(keys, tickets, strict=True))
        self.stats.requests += len(tickets)
        try:
            self._decoder.add([t.request for t in tickets], keys)
        except Exception as exc:  # a bad prompt must not take the running rows down with it
            for key, ticket in zip(keys, tickets, strict=True):
                del self._active[key]
                ticket.events.put(("error", f"generation failed: {type(exc).__name__}: {exc}"))

    def step(self) -> None:
        """One decode step of the running batch; finished tickets get their result at once."""
        size = len(self._decoder)
        if not size:
            return
        self.stats.steps += 1
        self.stats.row_steps += size
        self.stats.largest = max(self.stats.largest, size)
        if self._on_step is not None:
            self._on_step(size)
        try:
            finished = self._decoder.step()
        except Exception as exc:  # one bad step must not kill the server: every running caller gets the error
            self._decoder.reset()
            active, self._active = self._active, {}
            for ticket in active.values():
                ticket.events.put(("error", f"generation failed: {type(exc).__name__}: {exc}"))
            return
        for key, result in finished:
            ticket = self._active.pop(key)
            if self._on_done is not None:
                self._on_done(result)
            ticket.events.put(("done", result))

    def _loop(self) -> None:
        # After stop() the running rows still finish; nothing new is admitted.
        while True:
            if not self._stopped.is_set():
                self.admit(self.next_batch())
            if not self._active and self._stopped.is_set():
                return
            self.step()
