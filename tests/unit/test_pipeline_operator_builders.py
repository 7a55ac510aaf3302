"""The NexaPipeline state machine (``nexa_operator.pipelines``): pipeline and NexaJobs in, plan out.

Each test plays the API server: it feeds the plan's NexaJobs back as the pipeline's
children (with a uid, and the phase and result a finished NexaJob would have) and the
plan's status back as the pipeline's, and checks the next decision.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from nexa.contracts.nexajob import LABEL_TENANT, nexajob_job_id, nexajob_payload
from nexa.contracts.nexapipeline import (
    LABEL_PIPELINE,
    LABEL_STEP,
    LABEL_TRY,
    approve_annotation,
    step_nexajob_name,
)
from nexa_operator.builders import POD_ANNOTATIONS
from nexa_operator.crdschema import nexapipeline_crd
from nexa_operator.pipelines import PipelinePlan, decide_pipeline

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DS = "ds_" + "a" * 26
DS_CLEAN = "ds_" + "b" * 26
CKPT = "ckpt_" + "c" * 26
UID = "0b6c0a52-0000-4000-8000-000000000001"

AUDIT = {"name": "audit", "type": "audit", "spec": {"dataset_uri": "{params.dataset}"}}
TRAIN = {
    "name": "train",
    "type": "train",
    "spec": {"dataset_id": "{steps.audit.outputs.dataset_id}", "model": "gpt2", "epochs": 1},
}
EVALUATE = {
    "name": "evaluate",
    "type": "evaluate",
    "spec": {"checkpoint_id": "{steps.train.outputs.checkpoint_id}", "compare_base": True},
}
GOOD_AUDIT = {"dataset_id": DS_CLEAN, "quality_tier": "A", "overall_quality_score": 0.91}


def pipeline(
    *steps: dict[str, Any],
    name: str = "demo",
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "nexa.run/v1alpha1",
        "kind": "NexaPipeline",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": UID,
            "generation": 1,
            "resourceVersion": "10",
            "annotations": dict(annotations or {}),
            "labels": dict(labels or {}),
        },
        "spec": {"parameters": {"dataset": DS}, "steps": [copy.deepcopy(s) for s in steps]},
    }


def as_created(obj: dict[str, Any], phase: str = "Pending", **status: Any) -> dict[str, Any]:
    """A planned NexaJob as the API server would list it, in ``phase``."""
    made = copy.deepcopy(obj)
    made["metadata"]["uid"] = f"uid-of-{obj['metadata']['name']}"
    made["status"] = {"phase": phase, **status}
    return made


def advance(p: dict[str, Any], plan: PipelinePlan) -> None:
    """Store the plan's status on the pipeline, as the operator's write would."""
    if plan.status is not None:
        p["status"] = plan.status


def step(plan_or_pipeline: PipelinePlan | dict[str, Any], name: str) -> dict[str, Any]:
    status = (
        plan_or_pipeline.status if isinstance(plan_or_pipeline, PipelinePlan) else plan_or_pipeline["status"]
    )
    assert status is not None
    found: dict[str, Any] = next(s for s in status["steps"] if s["name"] == name)
    return found


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), None)


def run_chain(
    p: dict[str, Any], results: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], PipelinePlan]:
    """Complete each created NexaJob with ``results[step]`` until the pipeline stops creating any."""
    children: list[dict[str, Any]] = []
    plan = decide_pipeline(p, children, NOW)
    while plan.create:
        advance(p, plan)
        for obj in plan.create:
            step_name = obj["metadata"]["labels"][LABEL_STEP]
            children.append(as_created(obj, "Completed", result=results[step_name]))
        plan = decide_pipeline(p, children, NOW)
    advance(p, plan)
    return children, plan


# --- the first step ------------------------------------------------------------------------


def test_the_first_step_gets_a_nexajob_owned_by_the_pipeline() -> None:
    p = pipeline(TRAIN, AUDIT, EVALUATE, labels={LABEL_TENANT: "tnt_acme"})
    p["spec"]["labels"] = {"team": "support"}
    p["metadata"]["annotations"][POD_ANNOTATIONS] = '{"sidecar.istio.io/inject": "false"}'
    plan = decide_pipeline(p, [], NOW)

    assert [o["metadata"]["name"] for o in plan.create] == ["demo-audit-1"]
    job = plan.create[0]
    assert job["kind"] == "NexaJob" and job["metadata"]["namespace"] == "team-a"
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "nexa.run/v1alpha1",
            "kind": "NexaPipeline",
            "name": "demo",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    labels = job["metadata"]["labels"]
    assert labels[LABEL_PIPELINE] == "demo" and labels[LABEL_STEP] == "audit" and labels[LABEL_TRY] == "1"
    assert labels[LABEL_TENANT] == "tnt_acme" and job["spec"]["tenant"] == "tnt_acme"
    assert job["metadata"]["annotations"] == {POD_ANNOTATIONS: '{"sidecar.istio.io/inject": "false"}'}
    job_type, payload = nexajob_payload(job["spec"])
    assert job_type.value == "audit" and payload["dataset_uri"] == DS  # {params.dataset}
    # The pipeline's labels, and the two naming its pipeline and step (recorded in manifests).
    assert payload["labels"] == {
        "team": "support",
        "nexa.dev/pipeline": "demo",
        "nexa.dev/pipeline-step": "audit",
    }

    assert plan.status is not None
    assert plan.status["phase"] == "running" and plan.status["currentStep"] == "audit"
    assert [(s["name"], s["state"]) for s in plan.status["steps"]] == [
        ("audit", "running"),
        ("train", "pending"),
        ("evaluate", "pending"),
    ]
    assert "no step cache" in step(plan, "audit")["reason"]
    assert [e[1] for e in plan.events] == ["StepStarted"]


def test_a_pipeline_without_a_tenant_makes_nexajobs_without_one() -> None:
    plan = decide_pipeline(pipeline(AUDIT), [], NOW)
    job = plan.create[0]
    assert "tenant" not in job["spec"] and LABEL_TENANT not in job["metadata"]["labels"]
    assert "annotations" not in job["metadata"]


def test_the_same_observation_gives_the_same_plan_and_no_rewrite() -> None:
    p = pipeline(AUDIT, TRAIN)
    first, again = decide_pipeline(p, [], NOW), decide_pipeline(p, [], NOW)
    assert first.create == again.create and first.status == again.status
    advance(p, first)
    running = [as_created(first.create[0], "Running")]
    settled = decide_pipeline(p, running, NOW)
    assert settled.create == [] and settled.cancel == []
    # The step's job id comes from its NexaJob; once written, nothing changes any more.
    assert step(settled, "audit")["jobId"] == nexajob_job_id("demo-audit-1", "uid-of-demo-audit-1")
    advance(p, settled)
    assert decide_pipeline(p, running, NOW).status is None


@pytest.mark.parametrize(
    ("pipeline_name", "step_name", "attempt", "expected"),
    [
        ("demo", "train", 1, "demo-train-1"),
        ("demo", "train", 2, "demo-train-2"),
        ("demo", "fine_tune", 1, None),  # "_" is no name character: hashed
        ("p" * 60, "train", 1, None),  # too long: cut and hashed
    ],
)
def test_nexajob_names_are_deterministic_valid_and_distinct(
    pipeline_name: str, step_name: str, attempt: int, expected: str | None
) -> None:
    name = step_nexajob_name(pipeline_name, step_name, attempt)
    assert name == step_nexajob_name(pipeline_name, step_name, attempt)
    if expected is not None:
        assert name == expected
    assert len(name) <= 63 and "_" not in name and name.endswith(f"-{attempt}")
    assert name != step_nexajob_name(pipeline_name, step_name, attempt + 1)
    assert name != step_nexajob_name(pipeline_name, step_name.replace("_", "-") + "x", attempt)
    if "_" in step_name:
        assert name != step_nexajob_name(pipeline_name, step_name.replace("_", "-"), attempt)


# --- chaining ------------------------------------------------------------------------------


def test_placeholders_take_the_earlier_steps_outputs_and_the_pipeline_completes() -> None:
    p = pipeline(AUDIT, TRAIN, EVALUATE)
    results = {
        "audit": GOOD_AUDIT,
        "train": {"checkpoint_id": CKPT, "base_model": "gpt2"},
        "evaluate": {"eval_id": "ev_" + "d" * 26, "scores": {"perplexity": 9.0}},
    }
    children, plan = run_chain(p, results)

    assert [c["metadata"]["name"] for c in children] == ["demo-audit-1", "demo-train-1", "demo-evaluate-1"]
    _, train = nexajob_payload(children[1]["spec"])
    _, evaluate = nexajob_payload(children[2]["spec"])
    assert train["dataset_id"] == DS_CLEAN and evaluate["checkpoint_id"] == CKPT
    status = p["status"]
    assert status["phase"] == "completed" and "currentStep" not in status
    assert step(p, "train")["outputs"] == results["train"]
    assert condition(status, "Complete")["reason"] == "StepsCompleted"  # type: ignore[index]
    assert "Completed" in [e[1] for e in plan.events]
    # A finished pipeline plans nothing, whatever happens to its NexaJobs later.
    assert decide_pipeline(p, [], NOW) == PipelinePlan()


def test_the_tenant_is_pinned_at_the_first_reconcile() -> None:
    p = pipeline(AUDIT, TRAIN, labels={LABEL_TENANT: "tnt_acme"})
    first = decide_pipeline(p, [], NOW)
    advance(p, first)
    assert p["status"]["tenant"] == "tnt_acme"
    # Relabelled mid-run: the next step still runs for the tenant the pipeline started with.
    p["metadata"]["labels"][LABEL_TENANT] = "tnt_other"
    done = as_created(first.create[0], "Completed", result=GOOD_AUDIT)
    second = decide_pipeline(p, [done], NOW)
    assert [o["metadata"]["name"] for o in second.create] == ["demo-train-1"]
    assert second.create[0]["spec"]["tenant"] == "tnt_acme"
    assert second.create[0]["metadata"]["labels"][LABEL_TENANT] == "tnt_acme"


def test_a_job_id_placeholder_takes_the_earlier_steps_job_id() -> None:
    audit = {
        **AUDIT,
        "spec": {"dataset_uri": "{params.dataset}", "metadata": {"after": "{steps.prep.job_id}"}},
    }
    prep = {"name": "prep", "type": "audit", "spec": {"dataset_uri": "{params.dataset}"}}
    children, _ = run_chain(pipeline(prep, audit), {"prep": GOOD_AUDIT, "audit": GOOD_AUDIT})
    _, payload = nexajob_payload(children[1]["spec"])
    assert payload["metadata"] == {"after": nexajob_job_id("demo-prep-1", "uid-of-demo-prep-1")}


def test_an_output_the_result_lacks_fails_the_step_that_needs_it() -> None:
    p = pipeline(AUDIT, TRAIN, EVALUATE)
    children, _ = run_chain(p, {"audit": {"quality_tier": "A"}})  # no dataset_id
    assert [c["metadata"]["name"] for c in children] == ["demo-audit-1"]
    assert p["status"]["phase"] == "failed"
    assert p["status"]["error"]["code"] == "output_missing" and p["status"]["error"]["step"] == "train"
    assert step(p, "train")["state"] == "failed" and step(p, "evaluate")["state"] == "skipped"
    assert condition(p["status"], "Failed")["reason"] == "OutputMissing"  # type: ignore[index]


def test_a_spec_that_is_no_job_with_its_parameters_fails_before_anything_runs() -> None:
    # {params.size} is text, but evaluate's max_samples must be a number.
    bad = {**EVALUATE, "spec": {"checkpoint_id": CKPT, "max_samples": "{params.size}"}}
    p = pipeline(bad)
    p["spec"]["parameters"]["size"] = "many"
    plan = decide_pipeline(p, [], NOW)
    assert plan.create == []
    assert plan.status is not None and plan.status["phase"] == "failed"
    assert plan.status["error"]["code"] == "invalid_spec" and "max_samples" in plan.status["error"]["message"]


def test_an_output_that_makes_the_next_spec_invalid_refuses_that_step() -> None:
    p = pipeline(AUDIT, TRAIN)
    children, _ = run_chain(p, {"audit": {**GOOD_AUDIT, "dataset_id": ""}})
    assert [c["metadata"]["name"] for c in children] == ["demo-audit-1"]
    assert p["status"]["phase"] == "failed"
    assert p["status"]["error"] == {
        "code": "step_refused",
        "message": "step train: spec.dataset_id: String should have at least 1 character",
        "step": "train",
    }
    assert condition(p["status"], "Failed")["reason"] == "StepRefused"  # type: ignore[index]


def test_a_nexajob_the_api_server_refuses_fails_its_step() -> None:
    p = pipeline(AUDIT)
    plan = decide_pipeline(p, [], NOW, refused={"demo-audit-1": "spec.audit: Invalid value"})
    assert plan.create == []
    assert plan.status is not None and plan.status["phase"] == "failed"
    assert plan.status["error"]["code"] == "step_refused"
    assert "spec.audit: Invalid value" in step(plan, "audit")["reason"]


# --- gates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gate", "result", "passes", "said"),
    [
        (
            {"min_quality_tier": "B"},
            {**GOOD_AUDIT, "quality_tier": "A-"},
            True,
            "quality tier A- vs at least B",
        ),
        (
            {"min_quality_tier": "B"},
            {**GOOD_AUDIT, "quality_tier": "C+"},
            False,
            "quality tier C+ vs at least B",
        ),
    ],
)
def test_an_audit_gate_lets_the_pipeline_go_on_or_stops_it_with_the_figures(
    gate: dict[str, Any], result: dict[str, Any], passes: bool, said: str
) -> None:
    p = pipeline({**AUDIT, "gate": gate}, TRAIN)
    children, plan = run_chain(p, {"audit": result, "train": {"checkpoint_id": CKPT}})
    audit = step(p, "audit")
    assert audit["gate"] == {"passed": passes, "reason": said}
    if passes:
        assert p["status"]["phase"] == "completed" and len(children) == 2
        return
    assert len(children) == 1
    assert audit["state"] == "failed" and said in audit["reason"]
    assert p["status"]["phase"] == "failed" and p["status"]["currentStep"] == "audit"
    assert p["status"]["error"] == {
        "code": "gate_failed",
        "message": f"step audit: gate failed: {said}",
        "step": "audit",
    }
    assert step(p, "train")["state"] == "skipped"
    assert condition(p["status"], "Failed")["reason"] == "GateFailed"  # type: ignore[index]
    assert ("Warning", "GateFailed") in [(e[0], e[1]) for e in plan.events]


def test_an_evaluate_gate_on_improvement_over_the_base_model() -> None:
    p = pipeline(
        {
            **EVALUATE,
            "spec": {"checkpoint_id": CKPT, "compare_base": True},
            "gate": {"min_improvement": {"perplexity": 1.0}},
        }
    )
    _, _ = run_chain(p, {"evaluate": {"scores": {"perplexity": 9.5}, "base_scores": {"perplexity": 10.0}}})
    assert p["status"]["phase"] == "failed" and p["status"]["error"]["code"] == "gate_failed"
    assert (
        "perplexity 9.5 vs base 10: +0.5 better, wanted at least +1" in step(p, "evaluate")["gate"]["reason"]
    )


# --- retries -------------------------------------------------------------------------------


def test_a_failed_try_gets_a_new_nexajob_until_the_retries_are_used() -> None:
    p = pipeline({**AUDIT, "retries": 1}, TRAIN)
    plan = decide_pipeline(p, [], NOW)
    advance(p, plan)
    failed = {"error": {"code": "fatal_exit_code", "message": "dataset unreadable"}}
    children = [as_created(plan.create[0], "Failed", **failed)]

    plan = decide_pipeline(p, children, NOW)
    assert [o["metadata"]["name"] for o in plan.create] == ["demo-audit-2"]
    assert plan.create[0]["metadata"]["labels"][LABEL_TRY] == "2"
    assert plan.create[0]["spec"] == children[0]["spec"]
    audit = step(plan, "audit")
    assert (audit["state"], audit["tries"], audit["nexaJob"]) == ("running", 2, "demo-audit-2")
    assert [e[1] for e in plan.events] == ["StepRetrying"]
    advance(p, plan)

    children.append(as_created(plan.create[0], "Failed", **failed))
    plan = decide_pipeline(p, children, NOW)
    assert plan.create == []
    assert plan.status is not None and plan.status["phase"] == "failed"
    assert plan.status["error"]["code"] == "step_failed"
    assert "fatal_exit_code: dataset unreadable" in plan.status["error"]["message"]
    assert "after 2 tries" in step(plan, "audit")["reason"]


def test_a_retried_step_that_then_completes_lets_the_pipeline_go_on() -> None:
    p = pipeline({**AUDIT, "retries": 2}, TRAIN)
    plan = decide_pipeline(p, [], NOW)
    advance(p, plan)
    children = [as_created(plan.create[0], "Failed")]
    plan = decide_pipeline(p, children, NOW)
    advance(p, plan)
    children.append(as_created(plan.create[0], "Completed", result=GOOD_AUDIT))
    plan = decide_pipeline(p, children, NOW)
    assert [o["metadata"]["name"] for o in plan.create] == ["demo-train-1"]
    assert step(plan, "audit")["outputs"] == GOOD_AUDIT and step(plan, "audit")["tries"] == 2


# --- approvals and cancelling ----------------------------------------------------------------


def test_a_step_that_needs_approval_waits_for_its_annotation() -> None:
    p = pipeline(AUDIT, {**TRAIN, "approval": True})
    children, plan = run_chain(p, {"audit": GOOD_AUDIT})
    assert [c["metadata"]["name"] for c in children] == ["demo-audit-1"]
    status = p["status"]
    assert status["phase"] == "waiting" and status["currentStep"] == "train"
    assert step(p, "train")["state"] == "waiting_approval"
    assert approve_annotation("train") in step(p, "train")["reason"]
    assert condition(status, "WaitingForApproval")["status"] == "True"  # type: ignore[index]
    assert "ApprovalNeeded" in [e[1] for e in plan.events]
    # Still held on the next look, with no new Event.
    again = decide_pipeline(p, children, NOW)
    assert again.create == [] and again.events == [] and again.status is None

    p["metadata"]["annotations"][approve_annotation("train")] = "true"
    plan = decide_pipeline(p, children, NOW)
    assert [o["metadata"]["name"] for o in plan.create] == ["demo-train-1"]
    assert plan.status is not None and plan.status["phase"] == "running"
    assert "approved by annotation" in step(plan, "train")["reason"]
    assert condition(plan.status, "WaitingForApproval")["status"] == "False"  # type: ignore[index]


def test_the_cancel_annotation_cancels_running_nexajobs_and_ends_the_pipeline() -> None:
    p = pipeline(AUDIT, TRAIN)
    plan = decide_pipeline(p, [], NOW)
    advance(p, plan)
    children = [as_created(plan.create[0], "Running")]
    p["metadata"]["annotations"]["nexa.run/cancel"] = "true"
    plan = decide_pipeline(p, children, NOW)
    assert plan.cancel == ["demo-audit-1"] and plan.create == []
    assert plan.status is not None and plan.status["phase"] == "cancelled"
    assert plan.status["error"]["code"] == "cancelled"
    assert step(plan, "audit")["state"] == "cancelled" and step(plan, "train")["state"] == "skipped"
    assert condition(plan.status, "Cancelled")["reason"] == "CancelledByUser"  # type: ignore[index]


def test_a_failing_step_cancels_the_steps_running_beside_it() -> None:
    other = {"name": "second", "type": "audit", "spec": {"dataset_uri": "{params.dataset}"}}
    p = pipeline(AUDIT, other)
    plan = decide_pipeline(p, [], NOW)
    assert sorted(o["metadata"]["name"] for o in plan.create) == ["demo-audit-1", "demo-second-1"]
    advance(p, plan)
    children = [as_created(plan.create[0], "Failed"), as_created(plan.create[1], "Running")]
    plan = decide_pipeline(p, children, NOW)
    assert plan.cancel == ["demo-second-1"]
    assert plan.status is not None and plan.status["phase"] == "failed"
    assert plan.status["error"]["step"] == "audit"
    assert step(plan, "second")["state"] == "cancelled"


def test_nexajobs_of_an_earlier_pipeline_of_the_same_name_are_not_its_steps() -> None:
    p = pipeline(AUDIT)
    stale = as_created(decide_pipeline(p, [], NOW).create[0], "Completed", result=GOOD_AUDIT)
    stale["metadata"]["ownerReferences"][0]["uid"] = "uid-of-a-deleted-pipeline"
    plan = decide_pipeline(p, [stale], NOW)
    assert [o["metadata"]["name"] for o in plan.create] == ["demo-audit-1"]
    assert plan.status is not None and plan.status["phase"] == "running"


# --- invalid pipelines and the CRD -----------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "said"),
    [
        (lambda p: p["spec"]["steps"].append(copy.deepcopy(AUDIT)), "used twice"),
        (lambda p: p["spec"]["steps"][0]["spec"].update(dataset_uri="{params.nope}"), "names no parameter"),
        (lambda p: p["metadata"].update(name="n" * 64), "at most 63 characters"),
        (
            lambda p: p["spec"]["steps"][0]["spec"].update(verification={"replicas": 2, "quorum": 2}),
            "not supported in cluster mode",
        ),
    ],
)
def test_an_invalid_pipeline_fails_at_once_with_the_reason(mutate: Any, said: str) -> None:
    p = pipeline(AUDIT)
    mutate(p)
    plan = decide_pipeline(p, [], NOW)
    assert plan.create == []
    assert plan.status is not None and plan.status["phase"] == "failed", plan.status
    assert said in plan.status["error"]["message"]
    assert plan.status["error"]["code"] in ("invalid_spec", "step_refused")


def test_the_crd_has_step_status_age_columns_and_leaves_out_what_cluster_mode_cannot_do() -> None:
    crd = nexapipeline_crd()
    version = crd["spec"]["versions"][0]
    columns = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert columns == ["Step", "Status", "Age"]
    assert crd["spec"]["names"]["categories"] == ["nexa"] and crd["spec"]["scope"] == "Namespaced"
    assert version["subresources"] == {"status": {}}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["steps"]  # spec.name defaults to the object's name
    assert "idempotency_key" not in spec["properties"] and "max_cost_cents" not in spec["properties"]
    step_schema = spec["properties"]["steps"]["items"]["properties"]
    assert step_schema["spec"]["x-kubernetes-preserve-unknown-fields"] is True
    assert "nexa.run/approve-" in step_schema["approval"]["description"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"phase", "currentStep", "steps", "conditions", "observedGeneration"} <= set(status)
    assert {"nexaJob", "jobId", "tries", "outputs", "reason", "gate", "state"} <= set(
        status["steps"]["items"]["properties"]
    )
