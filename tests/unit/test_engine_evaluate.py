"""The evaluate engine on a tiny checkpoint: scores, base comparison, the report files, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from nexa.contracts import EvaluateSpec, TrainSpec  # noqa: E402
from nexa_engines.engine import EngineError  # noqa: E402
from nexa_engines.evaluate import metrics  # noqa: E402
from nexa_engines.evaluate import run as evaluate  # noqa: E402
from nexa_engines.models.tiny import TinyConfig, build_tiny_model, word_task_corpus, word_task_rows  # noqa: E402
from nexa_engines.train import run as train  # noqa: E402
from tests.unit.test_engine_fixtures import make_ctx, reporter_of, write_rows  # noqa: E402

TINY = TinyConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    root = tmp_path_factory.mktemp("evaluate")
    rows = word_task_rows()[:60]
    data = write_rows(root / "data.parquet", rows)
    base = build_tiny_model(root / "base", word_task_corpus(rows), TINY)
    spec = TrainSpec.model_validate(
        {
            "dataset_id": str(data),
            "model": str(base),
            "max_steps": 2,
            "holdout_fraction": 0.2,
            "hyperparameters": {"learning_rate": 1e-3, "batch_size": 4, "max_seq_len": 64},
        }
    )
    return root, train(make_ctx(root, job_id="job_trainevaltrainevaltraine"), spec)


def test_evaluate_scores_checkpoint_and_base_and_writes_reports(
    trained: tuple[Path, dict[str, object]],
) -> None:
    root, result = trained
    ctx = make_ctx(root, job_id="job_evaluateevaluateevaluate")
    spec = EvaluateSpec.model_validate(
        {"checkpoint_id": result["checkpoint_id"], "metrics": ["exact_match", "accuracy", "perplexity"]}
    )
    out = evaluate(ctx, spec)
    assert out["num_samples"] == 12  # 20% of 60 held out by the train job, found through the checkpoint
    assert set(out["scores"]) == {"exact_match", "accuracy", "perplexity"}
    assert set(out["base_scores"]) == set(out["scores"])
    assert out["improvement"]["perplexity"] == pytest.approx(
        out["scores"]["perplexity"] - out["base_scores"]["perplexity"]
    )
    assert 1.0 < out["scores"]["perplexity"] < 1e6
    eval_id = out["eval_id"]
    assert eval_id in ctx.produced_artifacts and out["report_uri"].endswith(f"{eval_id}/report.json")
    report = json.loads(ctx.store.read_file(eval_id, "report.json"))
    assert report["scores"] == out["scores"] and len(report["examples"]) == 12
    assert {"instruction", "reference", "prediction", "base_prediction"} <= set(report["examples"][0])
    assert "exact_match" in ctx.store.read_file(eval_id, "report.md").decode()
    assert ctx.store.read_file(eval_id, "report.html").decode().lstrip().lower().startswith("<!doctype html")
    # The rows asked for, once: scoring the base as well is not a second charge.
    assert reporter_of(ctx).usage_totals["samples"] == 12


def test_evaluate_without_base_on_an_explicit_dataset(trained: tuple[Path, dict[str, object]]) -> None:
    root, result = trained
    other = write_rows(root / "other.parquet", [{"question": "Say apple.", "answer": "apple"}] * 3)
    ctx = make_ctx(root, job_id="job_evalotherevalotherevalot")
    out = evaluate(
        ctx,
        EvaluateSpec.model_validate(
            {
                "checkpoint_id": result["checkpoint_id"],
                "dataset_id": str(other),
                "metrics": ["exact_match"],
                "compare_base": False,
            }
        ),
    )
    assert out["num_samples"] == 3 and out["base_scores"] is None and set(out["scores"]) == {"exact_match"}


def test_evaluate_reports_unknown_checkpoint_and_missing_judge(
    trained: tuple[Path, dict[str, object]],
) -> None:
    root, result = trained
    ctx = make_ctx(root, job_id="job_evalerrorsevalerrorsevale")
    with pytest.raises(EngineError) as missing:
        evaluate(ctx, EvaluateSpec.model_validate({"checkpoint_id": "ckpt_" + "z" * 26}))
    assert missing.value.code == "checkpoint_not_found"
    with pytest.raises(EngineError) as judge:
        evaluate(
            ctx,
            EvaluateSpec.model_validate(
                {"checkpoint_id": result["checkpoint_id"], "metrics": ["judge"], "compare_base": False}
            ),
        )
    assert judge.value.code == "judge_missing"


def test_exact_match_and_accuracy_normalize_answers() -> None:
    refs = ["Paris", "cold", "42"]
    assert metrics.exact_match([" paris.\n### Instruction", "Cold", "41"], refs) == pytest.approx(2 / 3)
    # Accuracy accepts the reference as whole words inside a longer answer, not as a substring.
    assert metrics.accuracy(["It is Paris", "colder", "the answer is 42"], refs) == pytest.approx(2 / 3)
    assert metrics.exact_match([], []) == 0.0
