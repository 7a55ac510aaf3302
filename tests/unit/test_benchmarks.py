"""Benchmarks through lm-evaluation-harness: the task builder, score flattening, the contract's rules,
and the evaluate engine running a multiple-choice and a generation task over local rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from nexa.contracts import BenchmarkTask, EvaluateSpec
from nexa_engines.engine import EngineError
from nexa_engines.evaluate.benchmarks import flat_scores, requested_tasks, task_config
from nexa_engines.evaluate.report import delta_cell, lower_is_better
from tests.unit.test_engine_fixtures import make_ctx, reporter_of, write_rows  # sets HF_HUB_OFFLINE=1 first

CKPT = "ckpt_" + "a" * 26

MC = {"doc_to_text": "{{question}}", "doc_to_target": "label", "doc_to_choice": "choices"}
GEN = {"output_type": "generate_until", "doc_to_text": "Q: {{q}}\nA:", "doc_to_target": "a"}


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (
            MC,
            {
                "output_type": "multiple_choice",
                "doc_to_choice": "choices",
                "metric_list": [
                    {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                    {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
                ],
            },
        ),
        (
            {**MC, "doc_to_choice": None, "choices": ["yes", "no"], "num_fewshot": 2},
            {"doc_to_choice": ["yes", "no"], "num_fewshot": 2, "fewshot_split": "test"},
        ),
        (
            GEN,
            {
                "output_type": "generate_until",
                "generation_kwargs": {
                    "until": ["\n"],
                    "max_gen_toks": 64,
                    "do_sample": False,
                    "temperature": 0.0,
                },
                "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
            },
        ),
        ({**GEN, "metrics": ["bleu"], "until": ["###"]}, {"metric_list": [{"metric": "bleu"}]}),
    ],
)
def test_task_config_reads_only_the_resolved_rows(task: dict[str, Any], expected: dict[str, Any]) -> None:
    config = task_config(BenchmarkTask.model_validate(task), Path("/w/rows.jsonl"), Path("/w/cache"))
    assert {k: config[k] for k in expected} == expected
    # The data source is always the file Nexa resolved for the tenant, in the job's own cache.
    assert config["dataset_path"] == "json"
    assert config["dataset_kwargs"] == {"data_files": {"test": "/w/rows.jsonl"}, "cache_dir": "/w/cache"}
    assert config["test_split"] == "test" and "fewshot_split" not in config or task.get("num_fewshot")
    assert ("generation_kwargs" in config) == (config["output_type"] == "generate_until")


@pytest.mark.parametrize(
    "task",
    [
        {"doc_to_text": "q", "doc_to_target": "a"},  # multiple choice without choices
        {**MC, "choices": ["a", "b"]},  # both sources of choices
        {**GEN, "choices": ["a"]},  # generation with choices
        {**MC, "dataset_path": "/etc"},  # no field names other data
        {**MC, "metrics": ["python_exec"]},
        {**MC, "name": "../x"},
    ],
)
def test_the_contract_refuses_tasks_that_cannot_run_or_name_other_data(task: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BenchmarkTask.model_validate(task)


def test_benchmark_names_are_a_comma_list_of_task_names() -> None:
    spec = EvaluateSpec.model_validate(
        {"checkpoint_id": CKPT, "benchmark": "arc_easy,hellaswag", "benchmark_task": {**MC, "name": "mine"}}
    )
    assert requested_tasks(spec) == ["arc_easy", "hellaswag", "mine"]
    for bad in ("mmlu,", "a b", "../tasks", "x;y"):
        with pytest.raises(ValidationError):
            EvaluateSpec.model_validate({"checkpoint_id": CKPT, "benchmark": bad})


def test_flat_scores_keep_metrics_of_the_requested_tasks_without_stderr() -> None:
    results = {
        "mmlu": {"alias": "mmlu", "acc,none": 0.25, "acc_stderr,none": 0.01},
        "mmlu_anatomy": {"acc,none": 0.3},
        "gsm8k": {"exact_match,strict-match": 0.5, "exact_match_stderr,strict-match": "N/A", "sample_len": 3},
    }
    assert flat_scores(results, ["mmlu", "gsm8k"]) == {
        "mmlu/acc": 0.25,
        "gsm8k/exact_match[strict-match]": 0.5,
    }


def test_benchmark_metrics_know_which_direction_is_better() -> None:
    assert lower_is_better("perplexity") and lower_is_better("wikitext/word_perplexity")
    assert lower_is_better("wmt/ter[none]") and not lower_is_better("arc_easy/acc")
    assert delta_cell("wmt/ter", 0.4, 0.5) == "-0.1000 (better)"
    assert delta_cell("arc_easy/acc", 0.4, 0.5) == "-0.1000 (worse)"


# ---- the engine, with lm-eval and a tiny model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    pytest.importorskip("lm_eval")
    pytest.importorskip("torch")
    from nexa.contracts import TrainSpec
    from nexa_engines.models.tiny import TinyConfig, build_tiny_model, word_task_corpus, word_task_rows
    from nexa_engines.train import run as train

    root = tmp_path_factory.mktemp("bench")
    rows = word_task_rows()[:40]
    base = build_tiny_model(
        root / "base",
        word_task_corpus(rows),
        TinyConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=300),
    )
    spec = TrainSpec.model_validate(
        {
            "dataset_id": str(write_rows(root / "train.parquet", rows)),
            "model": str(base),
            "max_steps": 1,
            "hyperparameters": {"batch_size": 4, "max_seq_len": 48},
        }
    )
    return root, str(train(make_ctx(root, job_id="job_benchtrainbenchtrainbench"), spec)["checkpoint_id"])


def _evaluate(root: Path, job: str, spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from nexa_engines.evaluate import run as evaluate

    ctx = make_ctx(root, job_id=job)
    return ctx, evaluate(ctx, EvaluateSpec.model_validate(spec))


def test_a_multiple_choice_task_over_the_users_rows_scores_checkpoint_and_base(
    checkpoint: tuple[Path, str],
) -> None:
    root, ckpt = checkpoint
    # Both choices are the same text, so every row's two log-likelihoods tie and lm-eval picks
    # the first: accuracy is exactly the share of rows whose answer is choice 0 (3 of 4). That
    # only comes out if lm-eval read these rows and their labels.
    rows = [{"question": f"Say {w}.", "choices": [w, w], "label": i % 4 == 3} for i, w in enumerate("abcd")]
    for row in rows:
        row["label"] = int(row["label"])
    data = write_rows(root / "mc.parquet", rows)
    ctx, out = _evaluate(
        root,
        "job_benchmcbenchmcbenchmcbench",
        {"checkpoint_id": ckpt, "dataset_id": str(data), "benchmark_task": {**MC, "name": "same_choice"}},
    )
    assert out["scores"]["same_choice/acc"] == pytest.approx(0.75)
    assert out["base_scores"]["same_choice/acc"] == pytest.approx(0.75)  # the base, scored the same way
    assert out["num_samples"] == 4 and reporter_of(ctx).usage_totals["samples"] == 4
    report = json.loads(ctx.store.read_file(out["eval_id"], "report.json"))
    assert report["benchmark"]["engine"] == "lm-evaluation-harness"
    assert report["benchmark"]["version"].startswith("0.4.")
    assert report["benchmark"]["results"]["same_choice"]["acc_stderr,none"] >= 0
    manifest = ctx.store.read_manifest(out["eval_id"], verify=False)
    assert manifest.config["lm_eval_version"] == report["benchmark"]["version"]
    assert manifest.inputs[0].sha256  # the rows' hash, as for every other input
    assert "Scored by lm-evaluation-harness" in ctx.store.read_file(out["eval_id"], "report.md").decode()


def test_a_generation_task_scores_exact_match_on_greedy_output(checkpoint: tuple[Path, str]) -> None:
    root, ckpt = checkpoint
    rows = [{"q": f"Say {w}.", "a": w} for w in ("apple", "pear", "plum")]
    data = write_rows(root / "gen.parquet", rows)
    _, out = _evaluate(
        root,
        "job_benchgenbenchgenbenchgenb",
        {
            "checkpoint_id": ckpt,
            "dataset_id": str(data),
            "compare_base": False,
            "max_samples": 2,
            "benchmark_task": {**GEN, "name": "say", "max_gen_toks": 4},
        },
    )
    assert set(out["scores"]) == {"say/exact_match"} and 0.0 <= out["scores"]["say/exact_match"] <= 1.0
    assert out["base_scores"] is None and out["num_samples"] == 2  # max_samples is lm-eval's limit


def test_a_template_cannot_reach_python_objects(checkpoint: tuple[Path, str]) -> None:
    root, ckpt = checkpoint
    data = write_rows(root / "evil.parquet", [{"q": "x", "a": "y"}])
    escape = "{{ q.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(EngineError) as caught:
        _evaluate(
            root,
            "job_benchevilbenchevilbenchev",
            {
                "checkpoint_id": ckpt,
                "dataset_id": str(data),
                "benchmark_task": {**GEN, "doc_to_text": escape},
            },
        )
    assert caught.value.code == "invalid_benchmark_task"


def test_named_tasks_unknown_or_without_data_fail_with_codes(
    checkpoint: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, ckpt = checkpoint
    with pytest.raises(EngineError) as unknown:
        _evaluate(root, "job_benchnamebenchnamebenchna", {"checkpoint_id": ckpt, "benchmark": "arc_easyy"})
    assert unknown.value.code == "benchmark_not_found" and "arc_easy" in unknown.value.message
    # No network here: with the hub offline and an empty cache, the data is missing, and the
    # message says which dataset to provide and where.
    monkeypatch.setenv("HF_HOME", str(root / "empty-hf-home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(root / "empty-hf-home" / "datasets"))
    with pytest.raises(EngineError) as missing:
        _evaluate(root, "job_benchdatabenchdatabenchda", {"checkpoint_id": ckpt, "benchmark": "arc_easy"})
    assert missing.value.code == "benchmark_data_missing"
    assert "allenai/ai2_arc" in missing.value.message and "HF_DATASETS_CACHE" in missing.value.message
