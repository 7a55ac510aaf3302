"""The whole model lifecycle through real gateway and worker processes, as ``nexa demo`` runs it:
train and deploy a teacher, generate, audit, distill, train a student, evaluate it against its base,
deploy it, ask it through the ``openai`` package, undeploy through the API, and see the servers exit."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

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
        listed = {d.deployment_id: d for d in client.list_deployments()}
        assert set(run.deployments) <= set(listed)
        for deployment_id in run.deployments:
            assert listed[deployment_id].status == "stopped"
            record = json.loads(client.read_artifact_file(deployment_id, DEPLOYMENT_FILE))
            deadline = time.monotonic() + 15
            while _alive(int(record["pid"])) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not _alive(int(record["pid"])), f"serving process {record['pid']} still runs"
