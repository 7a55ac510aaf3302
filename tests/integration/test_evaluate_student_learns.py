"""The recipe the demo relies on: train the tiny student with the train engine, and the evaluate
engine shows held-out exact match going from nothing (untrained base) to most answers right."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from nexa.contracts import EvaluateSpec, TrainSpec  # noqa: E402
from nexa_engines.evaluate import run as evaluate  # noqa: E402
from nexa_engines.models import tiny  # noqa: E402
from nexa_engines.train import run as train  # noqa: E402
from tests.unit.test_engine_fixtures import make_ctx, write_rows  # noqa: E402

# Training a student takes minutes on a loaded 2-core machine: past the suite's 300 s default.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_trained_student_beats_the_untrained_base_on_unseen_rows(tmp_path: Path) -> None:
    rows = tiny.word_task_rows()
    data = write_rows(tmp_path / "words.parquet", rows)
    base = tiny.build_tiny_model(tmp_path / "base", tiny.word_task_corpus(rows), tiny.STUDENT)
    ctx = make_ctx(tmp_path, job_id="job_learnlearnlearnlearnlearn")
    trained = train(
        ctx,
        TrainSpec.model_validate(
            {
                "dataset_id": str(data),
                "model": str(base),
                "epochs": 1000,
                "max_steps": tiny.STUDENT_MAX_STEPS,
                "holdout_fraction": tiny.STUDENT_HOLDOUT_FRACTION,
                "hyperparameters": tiny.STUDENT_HYPERPARAMETERS,
            }
        ),
    )
    report = evaluate(
        make_ctx(tmp_path, job_id="job_evalevalevalevalevalevale"),
        EvaluateSpec.model_validate(
            {"checkpoint_id": trained["checkpoint_id"], "metrics": ["exact_match", "perplexity"]}
        ),
    )
    assert report["num_samples"] == round(len(rows) * tiny.STUDENT_HOLDOUT_FRACTION)
    assert report["base_scores"]["exact_match"] == 0.0
    assert report["scores"]["exact_match"] >= 0.5, report
    assert report["scores"]["perplexity"] < report["base_scores"]["perplexity"] / 10
