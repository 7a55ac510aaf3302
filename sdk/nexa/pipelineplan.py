"""The pipeline planner: pure functions both the gateway (standalone) and the operator (cluster) run.

No I/O here: given a pipeline's spec and what its steps have done, these say which steps start,
what spec each one gets, whether a gate holds and what a step's cache key is. Whoever calls them
owns the state and the side effects (submitting jobs, writing rows or a custom resource's status).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from nexa.contracts.jobs import JobType, spec_for
from nexa.contracts.pipelines import (
    QUALITY_TIERS,
    Gate,
    GateOutcome,
    PipelineSpec,
    PipelineState,
    PipelineStep,
    StepState,
)
from nexa.contracts.results import RESULT_MODELS, lower_is_better

PLACEHOLDER = re.compile(
    r"\{(?:steps\.(?P<step>[a-z][a-z0-9_-]{0,39})\.(?:outputs\.(?P<output>[A-Za-z_][A-Za-z0-9_]{0,63})|(?P<job>job_id))"
    r"|params\.(?P<param>[a-z][a-z0-9_]{0,39}))\}"
)
# Anything that looks like a placeholder but does not parse is an error, not literal text.
LOOSE_PLACEHOLDER = re.compile(r"\{\s*(?:steps|params)\.[^{}]*\}")

# What does not change a step's outputs, so not its cache key: bookkeeping and scheduling.
NOT_IN_CACHE_KEY = frozenset(
    {
        "labels",
        "metadata",
        "priority",
        "idempotency_key",
        "max_cost_cents",
        "timeout_seconds",
        "max_retries",
        "resources",
    }
)
# Steps whose output is a live thing, not data: a cached deployment may have stopped since.
NEVER_CACHED = frozenset({JobType.deploy})

# A syntactically valid stand-in for an output, so a step's spec can be checked before it runs.
_SAMPLE_PREFIX = {
    "checkpoint_id": "ckpt",
    "hf_checkpoint_id": "ckpt",
    "warm_start_checkpoint_id": "ckpt",
    "dataset_id": "ds",
    "distilled_dataset_id": "ds",
    "generated_dataset_id": "ds",
    "holdout_dataset_id": "ds",
    "deployment_id": "dp",
    "eval_id": "ev",
    "job_id": "job",
}


@dataclass(frozen=True)
class Placeholder:
    text: str
    step: str | None = None
    output: str | None = None  # None with a step: the step's job id
    param: str | None = None


MAX_FILLED_CHARS = 262_144
"""How much a step's spec may grow, in all, once its placeholders are filled."""


class TooLong(ValueError):
    """A step's spec grows by more than ``MAX_FILLED_CHARS`` once filled."""


class MissingOutput(Exception):
    """A placeholder names an output the earlier step's result does not have."""

    def __init__(self, step: str, output: str) -> None:
        super().__init__(f"step {step!r} has no output {output!r}")
        self.step = step
        self.output = output


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def placeholders(value: Any) -> Iterator[Placeholder]:
    """Every placeholder in the strings of ``value`` (a spec), in order."""
    for text in _strings(value):
        for match in PLACEHOLDER.finditer(text):
            yield Placeholder(
                text=match.group(0), step=match["step"], output=match["output"], param=match["param"]
            )


def malformed(value: Any) -> list[str]:
    """Placeholder-like text that does not parse (``{steps.train.checkpoint_id}``)."""
    bad = []
    for text in _strings(value):
        for match in LOOSE_PLACEHOLDER.finditer(text):
            if not PLACEHOLDER.fullmatch(match.group(0)):
                bad.append(match.group(0))
    return bad


def needs_of(step: PipelineStep) -> list[str]:
    """The steps ``step`` waits for: its ``needs`` and every step its placeholders name."""
    found = list(step.needs)
    for ref in placeholders(step.spec):
        if ref.step is not None and ref.step not in found:
            found.append(ref.step)
    return found


def order(spec: PipelineSpec) -> list[str]:
    """Step names so every step follows those it needs (declaration order among equals).
    Raises ``ValueError`` naming the steps of a cycle."""
    names = [s.name for s in spec.steps]
    needs = {s.name: [n for n in needs_of(s) if n in names] for s in spec.steps}
    placed: list[str] = []
    done: set[str] = set()
    while len(placed) < len(names):
        ready = [n for n in names if n not in done and all(d in done for d in needs[n])]
        if not ready:
            stuck = [n for n in names if n not in done]
            raise ValueError(f"steps {', '.join(stuck)} need each other in a cycle")
        placed.extend(ready)
        done.update(ready)
    return placed


def _output_fields(job_type: JobType) -> set[str] | None:
    """The outputs a step of ``job_type`` is known to have; None when any may come (containers)."""
    if job_type is JobType.container:
        return None
    return set(RESULT_MODELS[job_type].model_fields)


def _sample(output: str | None) -> str:
    prefix = _SAMPLE_PREFIX.get(output or "job_id")
    if prefix is None and output and output.endswith("_id"):
        prefix = "x"
    return f"{prefix}_{'a' * 26}" if prefix else "sample"


def check_pipeline(spec: PipelineSpec) -> list[str]:
    """Everything wrong with ``spec`` that can be known before it runs, in words (empty: none)."""
    problems: list[str] = []
    names = [s.name for s in spec.steps]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            problems.append(f"step name {name!r} is used twice")
        seen.add(name)
    types = {s.name: s.type for s in spec.steps}
    for step in spec.steps:
        where = f"step {step.name!r}"
        for bad in malformed(step.spec):
            problems.append(
                f"{where}: {bad!r} is not a placeholder (use {{steps.<step>.outputs.<field>}}, "
                "{steps.<step>.job_id} or {params.<name>})"
            )
        for need in step.needs:
            if need not in types:
                problems.append(f"{where}: needs unknown step {need!r}")
        for ref in placeholders(step.spec):
            if ref.param is not None:
                if ref.param not in spec.parameters:
                    problems.append(f"{where}: {ref.text} names no parameter (add it under parameters)")
                continue
            assert ref.step is not None
            if ref.step == step.name:
                problems.append(f"{where}: {ref.text} names the step itself")
            elif ref.step not in types:
                problems.append(f"{where}: {ref.text} names unknown step {ref.step!r}")
            elif ref.output is not None:
                known = _output_fields(types[ref.step])
                if known is not None and ref.output not in known:
                    problems.append(
                        f"{where}: {ref.text}: the outputs of {types[ref.step].value} steps are {', '.join(sorted(known))}"
                    )
        if "idempotency_key" in step.spec:
            problems.append(f"{where}: spec.idempotency_key is set by the pipeline")
        if step.gate is not None:
            problems.extend(f"{where}: {p}" for p in _gate_fits(step.gate, step.type))
        if not problems:
            samples = {
                p.text: (spec.parameters.get(p.param) if p.param else _sample(p.output))
                for p in placeholders(step.spec)
            }
            try:
                spec_for(step.type, _fill(step.spec, samples.__getitem__, by_text=True))
            except TooLong as exc:
                problems.append(f"{where}: {exc}")
            except ValidationError as exc:
                for err in exc.errors():
                    loc = ".".join(str(part) for part in err["loc"]) or "spec"
                    problems.append(f"{where}: spec.{loc}: {err['msg']}")
    if not problems:
        try:
            order(spec)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def _gate_fits(gate: Gate, job_type: JobType) -> list[str]:
    problems = []
    if gate.min_quality_tier is not None and job_type is not JobType.audit:
        problems.append("gate.min_quality_tier applies to audit steps")
    if (gate.min_score or gate.min_improvement) and job_type is not JobType.evaluate:
        problems.append("gate.min_score and gate.min_improvement apply to evaluate steps")
    return problems


def _fill(value: Any, lookup: Callable[[Any], Any], *, by_text: bool = False) -> Any:
    """``value`` with placeholders replaced by ``lookup(placeholder)`` (``lookup(its text)`` with ``by_text``).

    Raises ``TooLong`` once what the placeholders add passes ``MAX_FILLED_CHARS`` in all: a short
    body of many placeholders must not grow into gigabytes before anything can refuse it.
    """
    added = [0]

    def one(match: re.Match[str]) -> Any:
        ref = _as_placeholder(match)
        found = lookup(ref.text if by_text else ref)
        added[0] += len(found) if isinstance(found, str) else 32
        if added[0] > MAX_FILLED_CHARS:
            raise TooLong(
                f"the spec is over {MAX_FILLED_CHARS} characters longer once its placeholders are filled"
            )
        return found

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            whole = PLACEHOLDER.fullmatch(item)
            if whole is not None:
                return one(whole)
            return PLACEHOLDER.sub(lambda m: str(one(m)), item)
        if isinstance(item, Mapping):
            return {k: walk(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [walk(v) for v in item]
        return item

    return walk(value)


def _as_placeholder(match: re.Match[str]) -> Placeholder:
    return Placeholder(text=match.group(0), step=match["step"], output=match["output"], param=match["param"])


def substitute(
    spec: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, Any]],
    job_ids: Mapping[str, str],
    params: Mapping[str, str],
) -> dict[str, Any]:
    """``spec`` with every placeholder replaced; raises ``MissingOutput`` for an output not there."""

    def lookup(ref: Placeholder) -> Any:
        if ref.param is not None:
            return params[ref.param]
        assert ref.step is not None
        if ref.output is None:
            return job_ids[ref.step]
        result = outputs.get(ref.step) or {}
        if ref.output not in result or result[ref.output] is None:
            raise MissingOutput(ref.step, ref.output)
        return result[ref.output]

    filled = _fill(dict(spec), lookup)
    assert isinstance(filled, dict)
    return filled


def evaluate_gate(gate: Gate, result: Mapping[str, Any]) -> GateOutcome:
    """Whether ``result`` (the step's job result) passes ``gate``, and the figures compared."""
    failures: list[str] = []
    passes: list[str] = []
    if gate.min_quality_tier is not None:
        tier = result.get("quality_tier")
        rank = QUALITY_TIERS.index(tier) if tier in QUALITY_TIERS else len(QUALITY_TIERS)
        said = f"quality tier {tier} vs at least {gate.min_quality_tier}"
        (passes if rank <= QUALITY_TIERS.index(gate.min_quality_tier) else failures).append(said)
    # A result is whatever the worker reported: anything but a mapping counts as no scores.
    scores = result.get("scores")
    scores = scores if isinstance(scores, Mapping) else {}
    base = result.get("base_scores")
    base = base if isinstance(base, Mapping) else {}
    for metric, bound in (gate.min_score or {}).items():
        value = scores.get(metric)
        if not isinstance(value, int | float):
            failures.append(f"no {metric} score")
            continue
        lower = lower_is_better(metric)
        ok = value <= bound if lower else value >= bound
        (passes if ok else failures).append(
            f"{metric} {value:.4g} vs {'at most' if lower else 'at least'} {bound:.4g}"
        )
    for metric, margin in (gate.min_improvement or {}).items():
        value, before = scores.get(metric), base.get(metric)
        if not isinstance(value, int | float) or not isinstance(before, int | float):
            failures.append(f"no {metric} score for both the model and its base (set compare_base)")
            continue
        gain = before - value if lower_is_better(metric) else value - before
        ok = gain >= margin
        (passes if ok else failures).append(
            f"{metric} {value:.4g} vs base {before:.4g}: {gain:+.4g} better, wanted at least {margin:+.4g}"
        )
    return GateOutcome(passed=not failures, reason="; ".join(failures or passes))


def cache_key(
    job_type: JobType | str, resolved_spec: Mapping[str, Any], input_digests: Mapping[str, str]
) -> str:
    """sha256 over the step's type, the parts of its resolved spec that shape its outputs, and the
    content digests of its inputs (by the reference that named them)."""
    body = {
        "type": JobType(job_type).value,
        "spec": {k: v for k, v in resolved_spec.items() if k not in NOT_IN_CACHE_KEY},
        "inputs": dict(sorted(input_digests.items())),
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def cacheable(step: PipelineStep) -> bool:
    return step.cache and step.type not in NEVER_CACHED


@dataclass
class Plan:
    """What to do next, and the pipeline's state once it is done."""

    start: list[str] = field(default_factory=list)  # submit (or reuse from the cache) now
    hold: list[str] = field(default_factory=list)  # ready, but wait for an approval
    skip: list[str] = field(default_factory=list)  # will never run: the pipeline stopped
    state: PipelineState = PipelineState.running


def plan(
    spec: PipelineSpec, states: Mapping[str, StepState], approved: set[str] | frozenset[str] = frozenset()
) -> Plan:
    """The next moves of a pipeline whose steps are in ``states`` (missing steps count as pending)."""
    status = {s.name: states.get(s.name, StepState.pending) for s in spec.steps}
    result = Plan()
    stopped = any(s in (StepState.failed, StepState.cancelled) for s in status.values())
    if stopped:
        result.skip = [n for n in order(spec) if status[n] in (StepState.pending, StepState.waiting_approval)]
        still_running = any(s is StepState.running for s in status.values())
        result.state = PipelineState.running if still_running else PipelineState.failed
        return result
    for name in order(spec):
        step = spec.step(name)
        if status[name] is not StepState.pending and not (
            status[name] is StepState.waiting_approval and name in approved
        ):
            continue
        if not all(status[need].done for need in needs_of(step)):
            continue
        if step.approval and name not in approved:
            if status[name] is StepState.pending:
                result.hold.append(name)
        else:
            result.start.append(name)
    if all(s.done for s in status.values()):
        result.state = PipelineState.completed
    elif result.start or any(s is StepState.running for s in status.values()):
        result.state = PipelineState.running
    else:
        result.state = PipelineState.waiting
    return result
