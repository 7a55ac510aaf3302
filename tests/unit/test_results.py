"""The result contracts: one model per job type, checked where results are made and read typed by clients."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from nexa.contracts import RESULT_MODELS, AuditResult, DeployResult, Job, JobState, JobType, result_for
from nexa.handles import BaseJobHandle


def test_every_job_type_has_a_result_model() -> None:
    assert set(RESULT_MODELS) == set(JobType)


def test_results_keep_extra_fields_and_refuse_missing_ones() -> None:
    deploy = result_for(
        "deploy",
        {
            "deployment_id": "dp_x",
            "inference_url": "https://models.example/v1/inference/dp_x",
            "openai_base_url": "https://models.example/v1/inference/dp_x/v1",
            "model_name": "dp_x",
            "checkpoint_id": "ckpt_x",
            "pid": 7,
        },
    )
    assert isinstance(deploy, DeployResult) and deploy.model_extra == {"pid": 7}
    with pytest.raises(ValidationError) as missing:
        result_for(JobType.audit, {"dataset_id": "ds_x"})
    assert "overall_quality_score" in str(missing.value)


def test_a_handle_reads_its_result_typed() -> None:
    now = datetime.now(UTC)
    job = Job(job_id="job_x", job_type=JobType.audit, status="running", created_at=now, updated_at=now)
    assert BaseJobHandle(job).typed_result is None
    result = {
        "dataset_id": "ds_x",
        "overall_quality_score": 4.9,
        "quality_tier": "A+",
        "metrics": {},
        "scored_dataset_uri": "internal://ds_x/scored.parquet",
        "report_uri": "internal://ds_x/report.html",
        "report_json_uri": "internal://ds_x/report.json",
        "num_rows": 1,
        "mean_score": 4.9,
        "flag_counts": {},
        "exact_duplicates": 0,
        "near_duplicates": 0,
        "near_duplicate_clusters": 0,
    }
    done = BaseJobHandle(job.model_copy(update={"status": JobState.completed, "result": result}))
    typed = done.typed_result
    assert isinstance(typed, AuditResult) and typed.quality_tier == "A+"
