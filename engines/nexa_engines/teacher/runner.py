"""Ask a teacher for many samples: bounded concurrency, per-sample journal, token totals."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from nexa_engines.engine import EngineContext
from nexa_engines.teacher.client import Completion, TeacherError
from nexa_engines.teacher.journal import SampleJournal
from nexa_engines.teacher.resolve import EndpointTeacher, LocalTeacher

# One sample's work: conversations in, a journal record out (a sample may need several teacher calls).
SampleFn = Callable[[int, Callable[[list[list[dict[str, str]]]], list[Completion]]], dict[str, Any]]


@dataclass
class RunStats:
    """What a run asked and got."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: list[str] = field(default_factory=list)


def run_samples(
    ctx: EngineContext,
    teacher: EndpointTeacher | LocalTeacher,
    indices: Sequence[int],
    make_sample: SampleFn,
    journal: SampleJournal,
    *,
    concurrency: int,
    max_tokens: int,
    temperature: float,
    on_done: Callable[[int], None] | None = None,
) -> RunStats:
    """Run ``make_sample`` for every index not yet in ``journal``; failed samples are listed, not written."""
    stats = RunStats()
    unanswered = [i for i in indices if i not in journal.done]

    def ask(conversations: list[list[dict[str, str]]]) -> list[Completion]:
        answers = teacher.answer(conversations, max_tokens=max_tokens, temperature=temperature)
        stats.prompt_tokens += sum(a.prompt_tokens for a in answers)
        stats.completion_tokens += sum(a.completion_tokens for a in answers)
        return answers

    if isinstance(teacher, LocalTeacher):
        # A local model batches internally; one thread keeps the decode loop to itself.
        for start in range(0, len(unanswered), teacher.batch_size):
            ctx.check_cancelled()
            group = unanswered[start : start + teacher.batch_size]
            for record in _batched_local(group, make_sample, ask):
                journal.add(record)
            if on_done is not None:
                on_done(len(journal.done))
        journal.flush()
        return stats

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="teacher") as pool:
        pending: dict[Future[dict[str, Any]], int] = {}
        queue = list(reversed(unanswered))
        try:
            while queue or pending:
                ctx.check_cancelled()
                while queue and len(pending) < concurrency:
                    index = queue.pop()
                    pending[pool.submit(make_sample, index, ask)] = index
                finished, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = pending.pop(future)
                    try:
                        journal.add(future.result())
                    except TeacherError as exc:
                        stats.failures.append(f"sample {index}: {exc}")
                    if on_done is not None:
                        on_done(len(journal.done))
        finally:
            for future in pending:
                future.cancel()
            journal.flush()
    return stats


def _batched_local(
    group: list[int], make_sample: SampleFn, ask: Callable[[list[list[dict[str, str]]]], list[Completion]]
) -> list[dict[str, Any]]:
    """Run ``make_sample`` for a group in lock step, so each teacher call answers the whole group at once."""
    import threading

    barrier_calls: list[list[list[dict[str, str]]]] = [[] for _ in group]
    answers: dict[int, list[Completion]] = {}
    lock = threading.Condition()
    round_no = {"n": 0, "waiting": 0, "active": len(group)}

    def make_ask(slot: int) -> Callable[[list[list[dict[str, str]]]], list[Completion]]:
        def ask_slot(conversations: list[list[dict[str, str]]]) -> list[Completion]:
            with lock:
                barrier_calls[slot] = conversations
                my_round = round_no["n"]
                round_no["waiting"] += 1
                if round_no["waiting"] == round_no["active"]:
                    _answer_round()
                else:
                    lock.wait_for(lambda: round_no["n"] != my_round)
                return answers.pop(slot)

        return ask_slot

    def _answer_round() -> None:
        slots = [s for s in range(len(group)) if barrier_calls[s]]
        flat = [c for s in slots for c in barrier_calls[s]]
        got = ask(flat) if flat else []
        at = 0
        for s in slots:
            n = len(barrier_calls[s])
            answers[s] = got[at : at + n]
            at += n
            barrier_calls[s] = []
        round_no["waiting"] = 0
        round_no["n"] += 1
        lock.notify_all()

    records: list[dict[str, Any] | None] = [None] * len(group)

    def body(slot: int) -> None:
        try:
            records[slot] = make_sample(group[slot], make_ask(slot))
        finally:
            with lock:
                round_no["active"] -= 1
                if round_no["active"] and round_no["waiting"] == round_no["active"]:
                    _answer_round()

    threads = [threading.Thread(target=body, args=(s,)) for s in range(len(group))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in records if r is not None]
