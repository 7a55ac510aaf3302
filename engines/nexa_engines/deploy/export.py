"""The deployed checkpoint in plain Hugging Face format (SPEC §8.5), loadable with ``from_pretrained`` alone.

A full-weights checkpoint already is one. A LoRA checkpoint holds only an adapter
that needs ``peft`` and its base model, so deploy merges the adapter into its
base once and stores the result as a checkpoint of its own, owned by the same
tenant. Its id is derived from the deploy attempt and the adapter: the platform
accepts an attempt's own outputs only (``promote_artifacts``), so each attempt
writes its own copy, and the same attempt run again finds it.
"""

from __future__ import annotations

from nexa.contracts import InputSource
from nexa.contracts.refs import artifact_ref_uri
from nexa.ids import derived_id
from nexa_engines.engine import EngineContext
from nexa_engines.models.loading import load_model, load_tokenizer, resolve_model
from nexa_store.base import ArtifactError

MERGED_CONFIG = "merged_from"


def hf_checkpoint(ctx: EngineContext, checkpoint_id: str) -> str:
    """The id of a full-weights checkpoint for ``checkpoint_id``: itself, or its adapter merged into its base."""
    resolved = resolve_model(checkpoint_id, store=ctx.store, workdir=ctx.workdir, access=ctx.access)
    if not resolved.is_adapter:
        return checkpoint_id
    merged_id = derived_id("ckpt", ctx.job_id, str(ctx.attempt), checkpoint_id, MERGED_CONFIG)
    try:
        existing = ctx.store.read_manifest(merged_id)
    except ArtifactError:
        existing = None
    if existing is not None and (existing.job_id, existing.attempt, existing.tenant_id) == (
        ctx.job_id,
        ctx.attempt,
        ctx.tenant_id,
    ):
        ctx.log(f"{checkpoint_id} was already merged: {merged_id}")
        ctx.produced_artifacts.append(merged_id)
        return merged_id
    ctx.log(f"merging the LoRA adapter {checkpoint_id} into its base for a plain Hugging Face copy")
    model = load_model(resolved)
    tokenizer = load_tokenizer(resolved)
    with ctx.store.begin("checkpoint", merged_id) as writer:
        model.save_pretrained(writer.path, safe_serialization=True)
        tokenizer.save_pretrained(writer.path)
        writer.commit(
            job_id=ctx.job_id,
            attempt=ctx.attempt,
            tenant_id=ctx.tenant_id,
            pipeline_id=ctx.pipeline_id,
            inputs=[InputSource(uri=artifact_ref_uri(checkpoint_id), artifact_id=checkpoint_id)],
            config={
                MERGED_CONFIG: checkpoint_id,
                "base_model": resolved.lineage_base,
                "format": "huggingface",
                "final": True,
            },
        )
    ctx.produced_artifacts.append(merged_id)
    del model
    return merged_id
