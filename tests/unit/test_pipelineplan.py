"""The pipeline planner (pure): validation, ordering, substitution, gates, cache keys, next moves."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nexa.contracts.pipelines import Gate, PipelineSpec, PipelineState, StepState
from nexa.pipelineplan import (
    MissingOutput,
    cache_key,
    cacheable,
    evaluate_gate,
    needs_of,
    order,
    plan,
    substitute,
)

DS = "ds_" + "a" * 26


def lifecycle(**deploy: Any) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "name": "lifecycle",
            "parameters": {"raw": DS, "steps": "7"},
            "steps": [
                # Declared out of order on purpose: the planner orders by what each step needs.
                {
                    "name": "deploy",
                    "type": "deploy",
                    "spec": {"checkpoint_id": "{steps.train.outputs.checkpoint_id}"},
                    "needs": ["evaluate"],
                    **deploy,
                },
                {"name": "audit", "type": "audit", "spec": {"dataset_id": "{params.raw}"}},
                {
                    "name": "train",
                    "type": "train",
                    "spec": {"dataset_id": "{steps.audit.outputs.dataset_id}", "max_steps": "{params.steps}"},
                },
                {
                    "name": "evaluate",
                    "type": "evaluate",
                    "spec": {"checkpoint_id": "{steps.train.outputs.checkpoint_id}"},
                    "gate": {"min_improvement": {"exact_match": 0.1}},
                },
            ],
        }
    )


def test_order_follows_needs_and_placeholders() -> None:
    spec = lifecycle()
    assert order(spec) == ["audit", "train", "evaluate", "deploy"]
    assert needs_of(spec.step("deploy")) == ["evaluate", "train"]


@pytest.mark.parametrize(
    ("steps", "parameters", "said"),
    [
        (
            [
                {"name": "a", "type": "train", "spec": {"dataset_id": "{steps.b.outputs.checkpoint_id}"}},
                {"name": "b", "type": "train", "spec": {"dataset_id": "{steps.a.outputs.checkpoint_id}"}},
            ],
            {},
            "need each other in a cycle",
        ),
        (
            [{"name": "a", "type": "audit", "spec": {"dataset_id": "{steps.a.outputs.dataset_id}"}}],
            {},
            "the step itself",
        ),
        (
            [{"name": "a", "type": "audit", "spec": {"dataset_id": "{steps.zz.outputs.dataset_id}"}}],
            {},
            "unknown step",
        ),
        (
            [
                {"name": "a", "type": "audit", "spec": {"dataset_id": DS}},
                {"name": "b", "type": "train", "spec": {"dataset_id": "{steps.a.outputs.checkpoint_id}"}},
            ],
            {},
            "the outputs of audit steps are",
        ),
        ([{"name": "a", "type": "audit", "spec": {"dataset_id": "{params.nope}"}}], {}, "names no parameter"),
        (
            [{"name": "a", "type": "audit", "spec": {"dataset_id": "{steps.a.dataset_id}"}}],
            {},
            "is not a placeholder",
        ),
        (
            [{"name": "a", "type": "audit", "spec": {"dataset_id": DS, "ngram": "{params.n}"}}],
            {"n": "many"},
            "ngram",
        ),
        (
            [{"name": "a", "type": "audit", "spec": {"dataset_id": DS}, "needs": ["x"]}],
            {},
            "needs unknown step",
        ),
        (
            [{"name": "a", "type": "audit", "spec": {"dataset_id": DS}, "gate": {"min_score": {"x": 1}}}],
            {},
            "apply to evaluate steps",
        ),
        (
            [{"name": "a", "type": "audit", "spec": {"dataset_id": DS, "idempotency_key": "k"}}],
            {},
            "set by the pipeline",
        ),
        (
            [
                {"name": "a", "type": "audit", "spec": {"dataset_id": DS}},
                {"name": "a", "type": "audit", "spec": {}},
            ],
            {},
            "used twice",
        ),
    ],
)
def test_bad_pipelines_say_what_is_wrong(
    steps: list[dict[str, Any]], parameters: dict[str, str], said: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        PipelineSpec.model_validate({"name": "p", "steps": steps, "parameters": parameters})
    assert said in str(caught.value)


def test_substitute_keeps_whole_values_and_interpolates_text() -> None:
    spec = {
        "dataset_id": "{steps.a.outputs.dataset_id}",
        "labels": {"from": "{steps.a.job_id}"},
        "n": "{steps.a.outputs.rows}",
        "note": "rows={steps.a.outputs.rows}",
    }
    filled = substitute(spec, {"a": {"dataset_id": "ds_x", "rows": 12}}, {"a": "job_1"}, {})
    assert filled == {"dataset_id": "ds_x", "labels": {"from": "job_1"}, "n": 12, "note": "rows=12"}
    with pytest.raises(MissingOutput):
        substitute({"x": "{steps.a.outputs.holdout_dataset_id}"}, {"a": {"holdout_dataset_id": None}}, {}, {})


@pytest.mark.parametrize(
    ("gate", "result", "passed", "said"),
    [
        ({"min_quality_tier": "B"}, {"quality_tier": "A-"}, True, "quality tier A- vs at least B"),
        ({"min_quality_tier": "B"}, {"quality_tier": "C+"}, False, "quality tier C+"),
        ({"min_quality_tier": "B"}, {}, False, "quality tier None"),
        ({"min_score": {"exact_match": 0.5}}, {"scores": {"exact_match": 0.5}}, True, "at least"),
        ({"min_score": {"perplexity": 20}}, {"scores": {"perplexity": 25.0}}, False, "at most"),
        ({"min_score": {"exact_match": 0.5}}, {"scores": {}}, False, "no exact_match score"),
        (
            {"min_improvement": {"exact_match": 0.2}},
            {"scores": {"exact_match": 0.6}, "base_scores": {"exact_match": 0.3}},
            True,
            "+0.3 better",
        ),
        (
            {"min_improvement": {"perplexity": 1}},
            {"scores": {"perplexity": 9.5}, "base_scores": {"perplexity": 10}},
            False,
            "+0.5 better",
        ),
        (
            {"min_improvement": {"exact_match": 0.1}},
            {"scores": {"exact_match": 0.6}},
            False,
            "set compare_base",
        ),
    ],
)
def test_gates(gate: dict[str, Any], result: dict[str, Any], passed: bool, said: str) -> None:
    outcome = evaluate_gate(Gate.model_validate(gate), result)
    assert outcome.passed is passed
    assert said in outcome.reason


def test_cache_key_ignores_bookkeeping_but_not_inputs() -> None:
    spec = {"dataset_uri": DS, "ngram": 5, "labels": {"a": "1"}, "priority": 3}
    key = cache_key("audit", spec, {"dataset_uri": "abc"})
    assert key == cache_key("audit", {**spec, "labels": {}, "priority": 0}, {"dataset_uri": "abc"})
    assert key != cache_key("audit", {**spec, "ngram": 6}, {"dataset_uri": "abc"})
    assert key != cache_key("audit", spec, {"dataset_uri": "abd"})
    assert key != cache_key("generate", spec, {"dataset_uri": "abc"})
    spec_ = lifecycle()
    assert cacheable(spec_.step("train")) and not cacheable(spec_.step("deploy"))


S = StepState


@pytest.mark.parametrize(
    ("states", "approved", "start", "hold", "skip", "state"),
    [
        ({}, set(), ["audit"], [], [], PipelineState.running),
        ({"audit": S.running}, set(), [], [], [], PipelineState.running),
        ({"audit": S.cached}, set(), ["train"], [], [], PipelineState.running),
        (
            {"audit": S.completed, "train": S.completed, "evaluate": S.completed},
            set(),
            [],
            ["deploy"],
            [],
            PipelineState.waiting,
        ),
        (
            {
                "audit": S.completed,
                "train": S.completed,
                "evaluate": S.completed,
                "deploy": S.waiting_approval,
            },
            set(),
            [],
            [],
            [],
            PipelineState.waiting,
        ),
        (
            {
                "audit": S.completed,
                "train": S.completed,
                "evaluate": S.completed,
                "deploy": S.waiting_approval,
            },
            {"deploy"},
            ["deploy"],
            [],
            [],
            PipelineState.running,
        ),
        (
            {"audit": S.completed, "train": S.completed, "evaluate": S.completed, "deploy": S.completed},
            set(),
            [],
            [],
            [],
            PipelineState.completed,
        ),
        (
            {"audit": S.completed, "train": S.failed},
            set(),
            [],
            [],
            ["evaluate", "deploy"],
            PipelineState.failed,
        ),
    ],
)
def test_next_moves(
    states: dict[str, StepState],
    approved: set[str],
    start: list[str],
    hold: list[str],
    skip: list[str],
    state: PipelineState,
) -> None:
    decided = plan(lifecycle(approval=True), states, approved)
    assert (decided.start, decided.hold, decided.skip, decided.state) == (start, hold, skip, state)


def test_a_failure_waits_for_running_siblings_before_the_pipeline_fails() -> None:
    spec = PipelineSpec.model_validate(
        {
            "name": "fan",
            "steps": [
                {"name": "a", "type": "audit", "spec": {"dataset_id": DS}},
                {"name": "b", "type": "audit", "spec": {"dataset_id": DS}},
                {
                    "name": "c",
                    "type": "audit",
                    "spec": {"dataset_id": "{steps.a.outputs.dataset_id}"},
                    "needs": ["b"],
                },
            ],
        }
    )
    assert plan(spec, {}).start == ["a", "b"]  # independent steps run side by side
    running = plan(spec, {"a": S.failed, "b": S.running})
    assert running.state is PipelineState.running and running.skip == ["c"] and not running.start
    assert plan(spec, {"a": S.failed, "b": S.completed}).state is PipelineState.failed


def test_the_lifecycle_example_is_valid_and_matches_the_tiny_models() -> None:
    from pathlib import Path

    from nexa.cli.demo import lifecycle_file
    from nexa.pipelinefile import load_pipeline

    path = lifecycle_file()
    assert path == Path(__file__).resolve().parents[2] / "examples" / "pipeline-lifecycle.yaml"
    spec = load_pipeline(
        path, {"truth_dataset": DS, "prompts_dataset": DS, "teacher_base": "a/b", "student_base": "c/d"}
    )
    assert order(spec) == [
        "train-teacher", "deploy-teacher", "generate", "audit", "distill", "train-student", "evaluate", "deploy-student"
    ]  # fmt: skip
    tiny = pytest.importorskip("nexa_engines.models.tiny")
    for name in ("train-teacher", "train-student"):
        train = spec.step(name).spec
        assert train["hyperparameters"] == tiny.STUDENT_HYPERPARAMETERS
        assert train["holdout_fraction"] == tiny.STUDENT_HOLDOUT_FRACTION
    assert spec.parameters["max_steps"] == str(tiny.STUDENT_MAX_STEPS)
