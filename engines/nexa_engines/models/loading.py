"""One loader for every model reference: a ``ckpt_…`` checkpoint, a local path, a Hugging Face id, or a
name in the platform's model catalog.

Which of them the job's tenant may use is decided by ``nexa_store.access``.

A checkpoint directory holds either full weights or a LoRA adapter; an adapter's
manifest names its base (``config.base_model``), which is resolved the same way.
Hugging Face ids load through the local cache only when ``HF_HUB_OFFLINE=1``; a
missing model is reported as an ``EngineError`` that says which reference failed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from nexa.contracts.catalog import CatalogEntry
from nexa_engines.engine import EngineError
from nexa_store.access import (
    Access,
    AccessDenied,
    catalog_directory,
    catalog_entry,
    check_artifact,
    check_scanned_file,
    local_path,
    parse_or_deny,
)
from nexa_store.base import ArtifactError, ArtifactNotFound, ArtifactStore
from nexa_store.pinned import PinError, pin_view

ADAPTER_FILE = "adapter_config.json"


@dataclass
class ResolvedModel:
    """Where a model's files are, and what the store says about it."""

    reference: str
    source: str  # local directory or Hugging Face id
    checkpoint_id: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    base: ResolvedModel | None = None  # set for LoRA adapters

    @property
    def is_adapter(self) -> bool:
        return self.base is not None

    @property
    def lineage_base(self) -> str:
        """The base model reference this model was trained from (itself for a base model)."""
        return str(self.config.get("base_model") or self.reference)


def resolve_model(
    reference: str, *, store: ArtifactStore, workdir: Path, access: Access, _depth: int = 0
) -> ResolvedModel:
    """Local files (or a hub id) for ``reference``, as the job's tenant may read them.

    ``EngineError(model_not_found | model_not_allowed | invalid_model_ref)`` when it
    names nothing this tenant can use; another tenant's checkpoint reads as not found.
    """
    if _depth > 8:
        raise EngineError("model_not_found", f"{reference}: the chain of base models is too long")
    try:
        entry = catalog_entry(access, reference, "model")
        if entry is not None:
            return _catalog_model(access, reference.strip(), entry)
        parsed = parse_or_deny(reference, "model")
        if parsed.form == "artifact":
            check_artifact(access, store, parsed.value, "model")
            return _checkpoint(parsed.value, store=store, workdir=workdir, access=access, depth=_depth)
        if parsed.form == "path":
            real = local_path(access, parsed.value, "model", shown=reference)
            if not (real / "config.json").is_file():
                raise EngineError(
                    "model_not_found", f"{reference!r} is not a model directory (no config.json)"
                )
            return ResolvedModel(reference.strip(), str(_pinned_directory(access, real, reference, workdir)))
        if parsed.form == "hf":
            if os.path.lexists(parsed.value):
                # transformers would load a directory of that name relative to the worker's cwd.
                raise AccessDenied(
                    "model_not_allowed",
                    f"{reference!r} names a directory on this worker; use an absolute path under a granted root",
                )
            return ResolvedModel(reference.strip(), parsed.value)
    except AccessDenied as exc:
        raise EngineError(exc.code, exc.message) from exc
    raise EngineError(
        "invalid_model_ref",
        f"{reference!r}: a model is a ckpt_ id, an absolute path under a granted root, or a Hugging Face id",
    )


def _pinned_directory(access: Access, real: Path, reference: str, workdir: Path) -> Path:
    """A private view of the model directory's files, each checked where its links lead and opened as checked.

    Directory links are not followed; a file whose target is not a regular file is
    left out. Loaders read the view (``nexa_store.pinned``), so swapping a checked
    file or directory for a link afterwards changes nothing they read.
    """
    files: list[tuple[PurePosixPath, Path]] = []
    for current, dirs, names in os.walk(real, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            file = Path(current, name)
            rel = PurePosixPath(file.relative_to(real).as_posix())
            target = Path(os.path.realpath(file))
            check_scanned_file(access, target, "model", f"{reference} ({rel})")
            if target.is_file():
                files.append((rel, target))
    view = workdir / "models" / f"local-{hashlib.sha256(str(real).encode()).hexdigest()[:12]}"
    try:
        return pin_view(view, files)
    except PinError as exc:
        raise EngineError("model_unreadable", f"{reference!r}: {exc}") from exc


def _catalog_model(access: Access, name: str, entry: CatalogEntry) -> ResolvedModel:
    """A model the platform's catalog names: the platform's choice, so no tenant grant applies."""
    hub_id = entry.hub_id
    if hub_id is not None:
        return ResolvedModel(name, hub_id)
    return ResolvedModel(name, str(catalog_directory(access, entry, name, "model")))


def _checkpoint(
    ref: str, *, store: ArtifactStore, workdir: Path, access: Access, depth: int
) -> ResolvedModel:
    try:
        manifest = store.read_manifest(ref, verify=False)
        directory = store.fetch(ref, workdir / "models" / ref)
    except ArtifactNotFound as exc:
        raise EngineError("model_not_found", f"checkpoint {ref} not found") from exc
    except ArtifactError as exc:
        raise EngineError("model_unreadable", f"checkpoint {ref} cannot be read: {exc}") from exc
    resolved = ResolvedModel(ref, str(directory), checkpoint_id=ref, config=dict(manifest.config))
    if (directory / ADAPTER_FILE).exists():
        base_ref = str(manifest.config.get("base_model") or "")
        if not base_ref:
            raise EngineError("model_unreadable", f"adapter checkpoint {ref} does not name its base model")
        resolved.base = resolve_model(base_ref, store=store, workdir=workdir, access=access, _depth=depth + 1)
    return resolved


def load_tokenizer(resolved: ResolvedModel) -> Any:
    """The tokenizer saved with the model (the base's, for an adapter without one), with a pad token."""
    from transformers import AutoTokenizer

    source = resolved.source
    if resolved.base is not None and not (Path(source) / "tokenizer_config.json").exists():
        source = resolved.base.source
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise EngineError(
            "model_not_found", f"cannot load the tokenizer of {resolved.reference}: {exc}"
        ) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(resolved: ResolvedModel, *, dtype: Any = None, trainable_adapter: bool = False) -> Any:
    """The causal LM; an adapter is applied to its base (merged unless ``trainable_adapter``)."""
    from transformers import AutoModelForCausalLM

    target = resolved.base if resolved.base is not None else resolved
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(target.source, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise EngineError(
            "model_not_found",
            f"cannot load model {target.reference}: {exc} (without network, Hugging Face ids must be cached)",
        ) from exc
    if resolved.base is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, resolved.source, is_trainable=trainable_adapter)
        if not trainable_adapter:
            model = model.merge_and_unload()
    return model
