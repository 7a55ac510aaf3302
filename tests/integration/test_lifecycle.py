"""The whole model lifecycle through real gateway and worker processes, as ``nexa demo`` runs it:
train and deploy a teacher, generate, audit, distill, train a student, evaluate it against its base,
deploy it, ask it through the ``openai`` package, undeploy through the API, and see the servers exit."""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("openai")

from nexa.cli.demo import run_lifecycle  # noqa: E402
from nexa.client import NexaClient  # noqa: E402
from nexa_store.serving import DEPLOYMENT_FILE  # noqa: E402
from tests.fixtures.gateway_proc import GatewayFactory, WorkerFactory  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as exited: the deploy engine reaps it soon after)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


def test_generate_audit_distill_train_evaluate_deploy_undeploy(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {"NEXA_TORCH_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    gateway = gateway_factory(extra_env=env)
    worker_factory(gateway, extra_env=env)
    with NexaClient(api_key=gateway.api_key, base_url=gateway.url, timeout=60.0) as client:
        run = run_lifecycle(client, scratch)
        assert [s.name for s in run.steps] == [
            "prepare data", "train teacher", "deploy teacher", "generate", "audit", "distill",
            "train student", "evaluate", "deploy student", "openai completion", "undeploy",
        ]  # fmt: skip
        assert all(s.status == "completed" for s in run.steps), run.steps
        assert run.base_exact_match == 0.0
        assert run.student_exact_match is not None and run.student_exact_match >= 0.5
        assert run.answer  # the deployed student answered through the openai package
        # One pipeline ran it all; lineage walks from the deployed student back to both raw datasets.
        assert run.pipeline is not None and run.pipeline.status.value == "completed"
        assert run.lineage is not None
        truth, prompts = (
            run.pipeline.spec.parameters["truth_dataset"],
            run.pipeline.spec.parameters["prompts_dataset"],
        )
        reached = {n.id for n in run.lineage.nodes}
        assert {truth, prompts} <= reached, reached
        student = run.lineage.root
        assert (
            run.lineage.node(student) is not None
            and run.lineage.node(student).pipeline_step == "deploy-student"
        )
        _check_bill(run)
        listed = {d.deployment_id: d for d in client.list_deployments()}
        assert set(run.deployments) <= set(listed)
        for deployment_id in run.deployments:
            assert listed[deployment_id].status == "stopped"
            record = json.loads(client.read_artifact_file(deployment_id, DEPLOYMENT_FILE))
            deadline = time.monotonic() + 15
            while _alive(int(record["pid"])) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not _alive(int(record["pid"])), f"serving process {record['pid']} still runs"


def _check_bill(run: Any) -> None:
    """The demo's bill: every job priced by the SPEC's book, and estimated before it ran. Units that do
    not depend on machine speed match their estimate exactly or stay within its bound; machine time is
    reported, never asserted."""
    from nexa.cli.demo import bill_rows

    assert run.bill is not None and run.bill.price_book == "spec"
    jobs = {s.job_id: s.name for s in run.steps if s.job_id.startswith("job_")}
    assert set(run.estimates) == set(jobs)  # an estimate for every job, asked at submission
    charged = {j.job_id: j for j in run.bill.by_job}
    by_step = {name: job_id for job_id, name in jobs.items()}

    def used(step: str, kind: str) -> Decimal:
        job = charged[by_step[step]]
        return sum((line.quantity for line in job.lines if line.kind == kind), Decimal(0))

    def guessed(step: str, kind: str) -> Decimal | None:
        return next(line.quantity for line in run.estimates[by_step[step]].lines if line.kind == kind)

    assert used("audit", "rows") == guessed("audit", "rows") == 24  # the generated set's rows, exactly
    assert used("evaluate", "samples") == guessed("evaluate", "samples") > 0  # the held-out rows, exactly
    for step in ("generate", "distill"):
        bound = guessed(step, "completion_tokens")
        assert bound is not None and 0 < used(step, "completion_tokens") <= bound
    # Machine time is estimated (from the model's size, or the teacher run's measured rate) and shown
    # beside what was used, never asserted: it depends on the machine. The SPEC does not price CPU time.
    for step in ("train teacher", "train student"):
        lines = run.estimates[by_step[step]].lines
        assert [line.kind for line in lines] == ["cpu_hours"] and lines[0].amount in (None, 0)
        row = next(r for r in bill_rows(run) if r[0] == step)
        assert lines[0].quantity is None or "cpu_hours)" in row[4], row
    # The money adds up: each job's cents are the sum of its lines', the audit at $0.20 per 1,000 rows.
    for job in charged.values():
        assert job.amount_cents == sum(line.amount_cents for line in job.lines)
    assert charged[by_step["audit"]].amount == Decimal("0.0048")
    assert [row[0] for row in bill_rows(run)] == [s.name for s in run.steps if s.job_id.startswith("job_")]
