"""Benchmarks through lm-evaluation-harness: its named tasks, or a task over the job's own dataset.

lm-eval is the engine, not a reimplementation: its task registry, its prompts and
its metrics, with the model handed to it already loaded (the tenant's checkpoint,
resolved the way every other engine resolves it). What Nexa adds:

* Task data for named tasks comes from the worker's datasets cache (offline where
  ``HF_HUB_OFFLINE=1``); data that is not there fails as ``benchmark_data_missing``
  naming the dataset to provide, not as a stack trace from ``datasets``.
* A user's task (``BenchmarkTask``) reads only the rows Nexa resolved for the tenant:
  the builder writes ``dataset_path``/``dataset_kwargs`` itself, and the contract has
  no field that could name other data or load code (no ``!function``, no ``include``).
* lm-eval renders templates with a plain Jinja environment, where a template can
  reach Python objects. A user's template is code run on the worker, so lm-eval's
  environment is swapped for Jinja's immutable sandbox before any task is built.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexa.contracts import BenchmarkTask, EvaluateSpec
from nexa_engines.engine import EngineError

ENGINE_NAME = "lm-evaluation-harness"
INSTALL_HINT = "install the benchmarks extra (pip install 'nexa-forge[benchmarks]') on the worker"
SPLIT = "test"
DEFAULT_METRICS: dict[str, list[str]] = {
    "multiple_choice": ["acc", "acc_norm"],
    "generate_until": ["exact_match"],
}
# Bootstrap resamples for the stderr of non-mean metrics (bleu, chrf, ter); lm-eval's default (100,000)
# takes minutes on a large task for a number the report only shows beside the score.
BOOTSTRAP_ITERS = 1000


@dataclass
class BenchmarkScores:
    """One model's benchmark run: flat scores for the report, and lm-eval's own results."""

    scores: dict[str, float]
    results: dict[str, dict[str, Any]]
    samples: int
    n_samples: dict[str, Any] = field(default_factory=dict)


def requested_tasks(spec: EvaluateSpec) -> list[str]:
    """The names of the tasks a spec asks for, in its order (a user's task last)."""
    names = [n for n in (spec.benchmark or "").split(",") if n]
    if spec.benchmark_task is not None:
        names.append(spec.benchmark_task.name)
    return names


def task_config(task: BenchmarkTask, data_file: Path, cache_dir: Path) -> dict[str, Any]:
    """lm-eval's task config for ``task`` over ``data_file`` (JSON lines), as its YAML would say it.

    Pure: no I/O. The data source is always the resolved file; nothing in ``task`` can change it.
    """
    metrics = task.metrics or DEFAULT_METRICS[task.output_type]
    config: dict[str, Any] = {
        "task": task.name,
        "output_type": task.output_type,
        "dataset_path": "json",
        # The cache is the job's own: one tenant's rows never land in a cache another job reads.
        "dataset_kwargs": {"data_files": {SPLIT: str(data_file)}, "cache_dir": str(cache_dir)},
        "test_split": SPLIT,
        "doc_to_text": task.doc_to_text,
        "doc_to_target": task.doc_to_target,
        "target_delimiter": task.target_delimiter,
        "num_fewshot": task.num_fewshot,
        "metric_list": [
            {"metric": name, "aggregation": "mean", "higher_is_better": True}
            if name in ("acc", "acc_norm", "acc_mutual_info", "exact_match")
            else {"metric": name}
            for name in metrics
        ],
        "metadata": {"version": 1.0},
    }
    if task.num_fewshot:
        # Few-shot examples come from the same rows; lm-eval's sampler leaves out the row being asked.
        config["fewshot_split"] = SPLIT
    if task.output_type == "multiple_choice":
        if task.choices is not None:
            config["doc_to_choice"] = list(task.choices)
        elif task.doc_to_choice is not None:
            config["doc_to_choice"] = task.doc_to_choice
        else:
            raise EngineError(
                "invalid_benchmark_task",
                f"benchmark task {task.name!r} is multiple_choice: give choices or doc_to_choice",
            )
    else:
        config["generation_kwargs"] = {
            "until": list(task.until),
            "max_gen_toks": task.max_gen_toks,
            "do_sample": False,
            "temperature": 0.0,
        }
    return config


def flat_scores(results: dict[str, dict[str, Any]], names: list[str]) -> dict[str, float]:
    """``{"task/metric": value}`` for the requested tasks (groups as lm-eval aggregated them).

    Standard errors stay in the full results; a filter other than lm-eval's ``none`` is
    kept in brackets (``gsm8k/exact_match[strict-match]``).
    """
    scores: dict[str, float] = {}
    for name in names:
        for key, value in (results.get(name) or {}).items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            metric, filter_name = key.split(",", 1)
            if metric.endswith("_stderr"):
                continue
            label = f"{name}/{metric}" if filter_name == "none" else f"{name}/{metric}[{filter_name}]"
            scores[label] = float(value)
    return scores


def lm_eval_version() -> str:
    """The installed lm-eval's version; ``benchmark_engine_missing`` where it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        import lm_eval  # noqa: F401
    except ImportError as exc:
        raise EngineError(
            "benchmark_engine_missing", f"benchmarks run on lm-evaluation-harness, which {INSTALL_HINT}"
        ) from exc
    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return "unknown"


def sandbox_templates() -> None:
    """Render every lm-eval template in Jinja's immutable sandbox (see the module docstring)."""
    import lm_eval.utils as lm_utils
    from jinja2 import BaseLoader, StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if isinstance(lm_utils.env, ImmutableSandboxedEnvironment):
        return
    sandbox = ImmutableSandboxedEnvironment(
        loader=BaseLoader(), undefined=StrictUndefined, keep_trailing_newline=True
    )
    sandbox.filters.update(lm_utils.env.filters)  # lm-eval's own filters (regex_replace) stay available
    lm_utils.env = sandbox


@contextmanager
def template_errors(names: list[str]) -> Iterator[None]:
    """A template that fails to render (or tries to leave the sandbox) is the task's fault, said so."""
    from jinja2 import TemplateError

    try:
        yield
    except TemplateError as exc:
        raise EngineError(
            "invalid_benchmark_task", f"benchmark {','.join(names)}: a template cannot be rendered: {exc}"
        ) from exc


class BenchmarkTasks:
    """Loads the spec's tasks once their names are known to exist, mapping data errors to codes."""

    def __init__(self, spec: EvaluateSpec, workdir: Path, data_file: Path | None) -> None:
        from lm_eval.tasks import TaskManager

        self.spec = spec
        self.names = requested_tasks(spec)
        self.named = [n for n in (spec.benchmark or "").split(",") if n]
        self.configs: list[str | dict[str, Any]] = list(self.named)
        if spec.benchmark_task is not None:
            assert data_file is not None, "a benchmark task needs its data file"
            self.configs.append(task_config(spec.benchmark_task, data_file, workdir / "datasets-cache"))
        # Indexing lm-eval's registry reads thousands of YAML files: only done when a task is named.
        self.manager = TaskManager(include_defaults=bool(self.named), verbosity="ERROR")
        self._check_names()

    def _check_names(self) -> None:
        known = set(self.manager.all_tasks)
        for name in self.named:
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise EngineError(
                    "benchmark_not_found", f"lm-evaluation-harness has no task or group {name!r}{hint}"
                )

    def load(self) -> dict[str, Any]:
        """lm-eval's task objects (fresh each call: a task keeps the requests of its last run)."""
        from lm_eval.tasks import get_task_dict

        sandbox_templates()
        try:
            with template_errors(self.names):
                return dict(get_task_dict(self.configs, self.manager))
        except (OSError, ValueError) as exc:
            # datasets raises FileNotFoundError / ConnectionError (OSError) for data it cannot get
            # offline, and ValueError for a split or config a cached copy lacks.
            raise EngineError("benchmark_data_missing", self._missing_message(exc)) from exc

    def _missing_message(self, exc: BaseException) -> str:
        sources = []
        for name in self.named:
            try:
                config = self.manager._get_config(name)  # a group has no dataset of its own
            except Exception:  # a group or tag: its subtasks' datasets are named by the error itself
                config = {}
            path = config.get("dataset_path")
            if path:
                sources.append(
                    f"{path}" + (f" ({config['dataset_name']})" if config.get("dataset_name") else "")
                )
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not sources:  # a group: the dataset its first subtask could not load is named in the error
            sources = sorted(set(re.findall(r"'([\w.-]+/[\w.-]+)'", detail)))
        what = f"the Hugging Face dataset {', '.join(sources)}" if sources else "its Hugging Face dataset"
        return (
            f"benchmark {','.join(self.names)}: the task data is missing here ({detail}). Provide {what} in "
            "the worker's datasets cache (HF_HOME or HF_DATASETS_CACHE; download it where the network is "
            "allowed, then copy the cache), or evaluate your own rows with benchmark_task and dataset_id"
        )


def evaluate_model(
    tasks: BenchmarkTasks, model: Any, tokenizer: Any, *, batch_size: int, limit: int | None
) -> BenchmarkScores:
    """Run the tasks on an already-loaded causal LM with lm-eval's evaluator."""
    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM

    task_dict = tasks.load()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    with template_errors(tasks.names):
        out = evaluator.simple_evaluate(
            model=lm,
            tasks=list(task_dict.values()),
            limit=limit,
            bootstrap_iters=BOOTSTRAP_ITERS,
            log_samples=False,
            task_manager=tasks.manager,
            confirm_run_unsafe_code=False,  # tasks that execute generated code are refused
        )
    if out is None:  # only on non-zero ranks of a distributed run, which this never is
        raise EngineError("benchmark_failed", "lm-evaluation-harness returned no results")
    results: dict[str, dict[str, Any]] = {k: dict(v) for k, v in out.get("results", {}).items()}
    for name, group in (out.get("groups") or {}).items():
        results.setdefault(name, dict(group))
    n_samples = dict(out.get("n-samples") or {})
    samples = sum(int(v.get("effective", 0)) for v in n_samples.values() if isinstance(v, dict))
    return BenchmarkScores(flat_scores(results, tasks.names), results, samples, n_samples)
