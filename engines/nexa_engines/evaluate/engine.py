"""The evaluate engine: task metrics on held-out data, optional judge, and the same for the base model."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from nexa.contracts import EvaluateSpec, InputSource
from nexa.contracts.refs import artifact_ref_uri
from nexa.ids import new_id
from nexa_engines.engine import EngineContext, EngineError
from nexa_engines.evaluate import benchmarks as bench
from nexa_engines.evaluate import metrics as m
from nexa_engines.evaluate.report import render_html, render_json, render_markdown
from nexa_engines.models.loading import load_model, load_tokenizer, resolve_model
from nexa_engines.models.runtime import configure_threads, pick_device
from nexa_engines.train.data import read_table, sft_pairs
from nexa_store.datasets import DatasetRefError, fetch_dataset

EXAMPLES = 20
BENCHMARK_BATCH = 8
JUDGE_PROMPT = (
    "Rate how well the answer responds to the instruction, compared with the reference answer. "
    "Reply with one integer from 1 (wrong) to 5 (fully correct).\n\nInstruction: {i}\nReference: {r}\nAnswer: {a}"
)


def _score_model(
    ctx: EngineContext, reference: str, spec: EvaluateSpec, pairs: list[tuple[str, str]], label: str
) -> tuple[dict[str, float], list[str]]:
    device = pick_device()
    resolved = resolve_model(reference, store=ctx.store, workdir=ctx.workdir, access=ctx.access)
    tokenizer = load_tokenizer(resolved)
    model = load_model(resolved, dtype=device.dtype).to(device.torch_device).eval()
    scores: dict[str, float] = {}
    preds: list[str] = []
    refs = [r for _, r in pairs]
    if {"exact_match", "accuracy", "judge"} & set(spec.metrics):
        preds = m.predictions(model, tokenizer, pairs)
        if "exact_match" in spec.metrics:
            scores["exact_match"] = m.exact_match(preds, refs)
        if "accuracy" in spec.metrics:
            scores["accuracy"] = m.accuracy(preds, refs)
    if "perplexity" in spec.metrics:
        scores["perplexity"] = m.perplexity(model, tokenizer, pairs)
    if "judge" in spec.metrics:
        scores["judge"] = _judge(ctx, spec, pairs, preds)
    ctx.log(f"{label} {reference}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return scores, preds


def _judge(ctx: EngineContext, spec: EvaluateSpec, pairs: list[tuple[str, str]], preds: list[str]) -> float:
    import re

    from nexa_engines.teacher.client import ChatClient, TeacherError

    if spec.judge is None:
        raise EngineError("judge_missing", "the judge metric needs a judge (base_url and model)")

    from nexa_store.access import AccessDenied
    from nexa_store.outbound import check_url

    try:
        check_url(str(spec.judge.base_url), resolve=True)
    except AccessDenied as exc:
        raise EngineError(exc.code, exc.message) from exc
    from nexa_store.outbound import key_for_url

    try:
        # The judge's URL is the user's: a worker key goes there only if the operator allows it.
        key = key_for_url(spec.judge.api_key_env, str(spec.judge.base_url))
    except AccessDenied as exc:
        raise EngineError(exc.code, exc.message) from exc
    client = ChatClient(
        str(spec.judge.base_url), spec.judge.model, api_key=key, timeout=spec.judge.timeout_seconds
    )
    got = []
    try:
        for (instruction, reference), answer in list(zip(pairs, preds, strict=True))[
            : spec.judge.sample_size
        ]:
            ctx.check_cancelled()
            try:
                reply = client.chat(
                    [{"role": "user", "content": JUDGE_PROMPT.format(i=instruction, r=reference, a=answer)}],
                    max_tokens=8,
                    temperature=0.0,
                )
            except TeacherError as exc:
                ctx.log(f"judge: {exc}")
                continue
            match = re.search(r"[1-5]", reply.text)
            if match:
                got.append((int(match.group()) - 1) / 4)
    finally:
        client.close()
    if not got:
        raise EngineError("judge_failed", "the judge returned no usable score", retryable=True)
    return sum(got) / len(got)


def run(ctx: EngineContext, spec: EvaluateSpec) -> dict[str, Any]:
    """Evaluate ``spec.checkpoint_id`` (and its base); commit a report; return ``eval_id``, ``scores``, ``report_uri``."""
    if not isinstance(spec, EvaluateSpec):
        spec = EvaluateSpec.model_validate(spec)
    configure_threads()
    try:
        manifest = ctx.store.read_manifest(spec.checkpoint_id, verify=False)
    except Exception as exc:
        raise EngineError(
            "checkpoint_not_found", f"checkpoint {spec.checkpoint_id} cannot be read: {exc}"
        ) from exc
    if spec.benchmark or spec.benchmark_task:
        return _run_benchmarks(ctx, spec, manifest.config)
    dataset_ref = spec.dataset_id or manifest.config.get("holdout_dataset_id")
    if not dataset_ref:
        raise EngineError("dataset_missing", f"{spec.checkpoint_id} has no held-out split; pass dataset_id")
    try:
        dataset = fetch_dataset(str(dataset_ref), store=ctx.store, access=ctx.access, workdir=ctx.workdir)
    except DatasetRefError as exc:
        raise EngineError(exc.code, exc.message) from exc
    pairs = sft_pairs(read_table(dataset.path, dataset.format))
    if spec.max_samples:
        pairs = pairs[: spec.max_samples]
    if not pairs:
        raise EngineError("dataset_empty", f"{dataset_ref} has no instruction/response rows")
    started = time.monotonic()
    ctx.progress(0.1, f"scoring {spec.checkpoint_id} on {len(pairs)} samples")
    scores, preds = _score_model(ctx, spec.checkpoint_id, spec, pairs, "checkpoint")
    base_ref = manifest.config.get("trained_from") if spec.compare_base else None
    base_scores: dict[str, float] | None = None
    base_preds: list[str] = []
    if base_ref:
        ctx.progress(0.55, f"scoring the base model {base_ref}")
        base_scores, base_preds = _score_model(ctx, str(base_ref), spec, pairs, "base")
    # What the user asked to have evaluated: the base-model comparison is Nexa's own, not billed again.
    ctx.usage("samples", len(pairs))
    report: dict[str, Any] = {
        "checkpoint_id": spec.checkpoint_id,
        "base_model": base_ref,
        "dataset": str(dataset_ref),
        "num_samples": len(pairs),
        "scores": scores,
        "base_scores": base_scores,
        "improvement": {k: scores[k] - base_scores[k] for k in scores if base_scores and k in base_scores},
        "seconds": round(time.monotonic() - started, 2),
        "examples": [
            {
                "instruction": p,
                "reference": r,
                "prediction": preds[i] if preds else "",
                "base_prediction": base_preds[i] if base_preds else "",
            }
            for i, (p, r) in enumerate(pairs[:EXAMPLES])
        ],
    }
    inputs = [
        InputSource(uri=dataset.uri, sha256=dataset.sha256, artifact_id=dataset.artifact_id),
        InputSource(uri=spec.checkpoint_id, artifact_id=spec.checkpoint_id),  # the model evaluated
    ]
    config = {"checkpoint_id": spec.checkpoint_id, "metrics": list(spec.metrics)}
    return _commit_report(ctx, report, inputs, config, {"scores": scores, "base_scores": base_scores})


def _commit_report(
    ctx: EngineContext,
    report: dict[str, Any],
    inputs: list[InputSource],
    config: dict[str, Any],
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """Write the report in its three forms as one ``ev_…`` artifact; the job's result."""
    eval_id = new_id("ev")
    with ctx.store.begin("eval", eval_id) as writer:
        (writer.path / "report.json").write_text(render_json(report), encoding="utf-8")
        (writer.path / "report.md").write_text(render_markdown(report), encoding="utf-8")
        (writer.path / "report.html").write_text(render_html(report), encoding="utf-8")
        writer.commit(
            job_id=ctx.job_id,
            attempt=ctx.attempt,
            tenant_id=ctx.tenant_id,
            pipeline_id=ctx.pipeline_id,
            inputs=inputs,
            config=config,
            metrics=metrics,
        )
    ctx.produced_artifacts.append(eval_id)
    uri = artifact_ref_uri(eval_id)  # never a server path: users download through the API
    return {
        "eval_id": eval_id,
        "scores": report["scores"],
        "base_scores": report["base_scores"],
        "improvement": report["improvement"],
        "report_uri": f"{uri}/report.json",
        "report_html_uri": f"{uri}/report.html",
        "num_samples": report["num_samples"],
    }


def _benchmark_data(
    ctx: EngineContext, spec: EvaluateSpec, config: dict[str, Any]
) -> tuple[Path, InputSource]:
    """The benchmark task's rows, resolved for the tenant, as the JSON lines file lm-eval reads."""
    dataset_ref = spec.dataset_id or config.get("holdout_dataset_id")
    if not dataset_ref:
        raise EngineError(
            "dataset_missing",
            f"benchmark_task needs rows: {spec.checkpoint_id} has no held-out split; pass dataset_id",
        )
    try:
        dataset = fetch_dataset(str(dataset_ref), store=ctx.store, access=ctx.access, workdir=ctx.workdir)
    except DatasetRefError as exc:
        raise EngineError(exc.code, exc.message) from exc
    rows = read_table(dataset.path, dataset.format).to_pylist()
    if not rows:
        raise EngineError("dataset_empty", f"{dataset_ref} has no rows")
    out = ctx.workdir / "benchmark" / f"{uuid.uuid4().hex}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
    return out, InputSource(uri=dataset.uri, sha256=dataset.sha256, artifact_id=dataset.artifact_id)


def _benchmark_model(
    ctx: EngineContext, tasks: bench.BenchmarkTasks, reference: str, limit: int | None, label: str
) -> bench.BenchmarkScores:
    device = pick_device()
    resolved = resolve_model(reference, store=ctx.store, workdir=ctx.workdir, access=ctx.access)
    tokenizer = load_tokenizer(resolved)
    model = load_model(resolved, dtype=device.dtype).to(device.torch_device).eval()
    run = bench.evaluate_model(tasks, model, tokenizer, batch_size=BENCHMARK_BATCH, limit=limit)
    ctx.log(f"{label} {reference}: " + ", ".join(f"{k} {v:.4f}" for k, v in run.scores.items()))
    return run


def _run_benchmarks(ctx: EngineContext, spec: EvaluateSpec, config: dict[str, Any]) -> dict[str, Any]:
    """lm-evaluation-harness tasks on the checkpoint (and its base); the same report and result shape."""
    version = bench.lm_eval_version()
    names = bench.requested_tasks(spec)
    data_file, inputs = None, []
    if spec.benchmark_task is not None:
        data_file, source = _benchmark_data(ctx, spec, config)
        inputs.append(source)
    ctx.progress(0.05, f"loading lm-evaluation-harness {version} tasks: {', '.join(names)}")
    tasks = bench.BenchmarkTasks(spec, ctx.workdir, data_file)
    tasks.load()  # the data is checked before any model is loaded
    started = time.monotonic()
    ctx.progress(0.1, f"running {', '.join(names)} on {spec.checkpoint_id}")
    run = _benchmark_model(ctx, tasks, spec.checkpoint_id, spec.max_samples, "checkpoint")
    base_ref = config.get("trained_from") if spec.compare_base else None
    base: bench.BenchmarkScores | None = None
    if base_ref:
        ctx.check_cancelled()
        ctx.progress(0.55, f"running {', '.join(names)} on the base model {base_ref}")
        base = _benchmark_model(ctx, tasks, str(base_ref), spec.max_samples, "base")
    ctx.usage("samples", run.samples)  # the rows asked for; the base comparison is not billed again
    base_scores = base.scores if base else None
    lm_eval = {
        "engine": bench.ENGINE_NAME,
        "version": version,
        "tasks": names,
        "results": run.results,
        "base_results": base.results if base else None,
        "n_samples": run.n_samples,
    }
    report: dict[str, Any] = {
        "checkpoint_id": spec.checkpoint_id,
        "base_model": base_ref,
        "dataset": inputs[0].uri if inputs else f"lm-eval: {', '.join(names)}",
        "num_samples": run.samples,
        "scores": run.scores,
        "base_scores": base_scores,
        "improvement": {
            k: run.scores[k] - base_scores[k] for k in run.scores if base_scores and k in base_scores
        },
        "seconds": round(time.monotonic() - started, 2),
        "benchmark": lm_eval,
        "examples": [],
    }
    manifest_config = {
        "checkpoint_id": spec.checkpoint_id,
        "benchmark": spec.benchmark,
        "benchmark_task": spec.benchmark_task.model_dump(mode="json") if spec.benchmark_task else None,
        "lm_eval_version": version,
    }
    metrics = {"scores": run.scores, "base_scores": base_scores, "lm_eval": lm_eval}
    return _commit_report(ctx, report, inputs, manifest_config, metrics)
