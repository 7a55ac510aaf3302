"""The generate engine: synthetic instruction data for a domain, through the same teacher path as distill.

Each sample takes two teacher calls: one writes a new instruction about the
domain (the sample number and a topic hint keep them apart), one answers it.
Samples are journaled like distill's, so a retried attempt resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nexa.contracts import GenerateSpec, InputSource
from nexa.contracts.refs import artifact_ref_uri
from nexa_engines.engine import EngineContext, EngineError
from nexa_engines.models.prompt import clean_completion
from nexa_engines.teacher.client import Completion
from nexa_engines.teacher.journal import SampleJournal
from nexa_engines.teacher.output import SFT_FILE, check_answers, commit_sft_dataset
from nexa_engines.teacher.resolve import teacher_for
from nexa_engines.teacher.runner import run_samples

STYLES = (
    "a question",
    "a how-to request",
    "a short task",
    "a comparison",
    "a definition request",
    "a calculation",
)


def instruction_request(domain: str, index: int) -> list[dict[str, str]]:
    """The conversation that asks the teacher for sample ``index``'s instruction."""
    style = STYLES[index % len(STYLES)]
    return [
        {
            "role": "system",
            "content": "You write realistic, self-contained user requests for training data. Reply with the request only.",
        },
        {
            "role": "user",
            "content": f"Write {style} a user might ask about {domain}. This is request number {index + 1}; make it different from the others.",
        },
    ]


def run(ctx: EngineContext, spec: GenerateSpec) -> dict[str, Any]:
    """Generate ``spec.num_samples`` instruction/response pairs about ``spec.domain``."""
    if not isinstance(spec, GenerateSpec):
        spec = GenerateSpec.model_validate(spec)
    journal = SampleJournal(ctx)
    resumed = journal.load()
    teacher = teacher_for(ctx, spec)
    ctx.log(f"generating {spec.num_samples} samples about {spec.domain!r} with {teacher.name}")

    def make_sample(
        index: int, ask: Callable[[list[list[dict[str, str]]]], list[Completion]]
    ) -> dict[str, Any]:
        made = ask([instruction_request(spec.domain, index)])[0]
        instruction = (
            clean_completion(made.text) or made.text.strip() or f"Tell me something about {spec.domain}."
        )
        answer = ask([[{"role": "user", "content": instruction}]])[0]
        return {
            "index": index,
            "instruction": instruction,
            "response": answer.text,
            "prompt_tokens": made.prompt_tokens + answer.prompt_tokens,
            "completion_tokens": made.completion_tokens + answer.completion_tokens,
        }

    def on_done(done: int) -> None:
        ctx.progress(0.05 + 0.9 * done / spec.num_samples, f"{done}/{spec.num_samples} samples")

    indices = list(range(spec.num_samples))
    try:
        stats = run_samples(
            ctx, teacher, indices, make_sample, journal,
            concurrency=spec.concurrency, max_tokens=spec.max_tokens, temperature=spec.temperature, on_done=on_done,
        )  # fmt: skip
    finally:
        teacher.close()
    ctx.usage("prompt_tokens", stats.prompt_tokens)
    ctx.usage("completion_tokens", stats.completion_tokens)
    missing = [i for i in indices if i not in journal.done]
    if missing:
        raise EngineError(
            "teacher_failed",
            f"{len(missing)} of {len(indices)} samples are not generated yet; a retry resumes",
            retryable=True,
        )
    records = [journal.done[i] for i in indices]
    check_answers(records, str(spec.teacher))
    dataset_id, tokens = commit_sft_dataset(
        ctx,
        records,
        inputs=[InputSource(uri=f"teacher:{spec.teacher}")],
        config={"domain": spec.domain, "teacher": spec.teacher, "temperature": spec.temperature},
    )
    return {
        "dataset_id": dataset_id,
        "generated_dataset_id": dataset_id,
        "sft_dataset_uri": f"{artifact_ref_uri(dataset_id)}/{SFT_FILE}",
        "num_samples": len(records),
        "estimated_tokens": tokens,
        "resumed_samples": resumed,
        "domain": spec.domain,
    }
