"""Which request fields name something a job reads, and what form each value takes.

Every field of a job request that names an input — a dataset, a checkpoint, a
model, a teacher, an endpoint URL — carries a ``Ref`` marker in its type (see
``nexa.contracts.jobs``). ``job_references`` walks a request and yields every
such value, so the gateway (at submit) and the worker or pod (at run) check the
same list; a field added later is checked as soon as its type carries a marker,
and a unit test fails for any string field that carries none and is not listed
in ``NOT_REFERENCES``.

``parse_reference`` classifies a value without touching any server: this module
is pure and imported everywhere. Whether the tenant may read it is decided by the
resolver in ``nexa_store.access``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from nexa.contracts.catalog import is_catalog_name
from nexa.ids import id_prefix

RefKind = Literal["dataset", "checkpoint", "model", "teacher", "url"]
RefForm = Literal[
    "artifact",  # ds_… / ckpt_… / dp_… id, or internal://<id>
    "path",  # absolute local path or file:// URI
    "relative",  # a relative path: never accepted (it would resolve against a worker's cwd)
    "s3",  # s3://bucket/key
    "hf",  # hf://… or a bare Hugging Face repo id: public data
    "provider",  # provider/model of an OpenAI-compatible API
    "catalog",  # a bare model name ("Mistral-7B"): only the model catalog gives it a meaning
    "http",  # http(s):// URL
    "invalid",
]

ARTIFACT_SCHEME = "internal://"
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# A Hugging Face repo id: "name" or "owner/name", letters, digits, '-', '_', '.'; never '..'.
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")


@dataclass(frozen=True)
class Ref:
    """Type marker: the annotated field names something of ``kind`` the job will read."""

    kind: RefKind


@dataclass(frozen=True)
class JobReference:
    """One reference a request carries: the dotted field path, its kind and its value."""

    field: str
    kind: RefKind
    value: str


@dataclass(frozen=True)
class ParsedRef:
    form: RefForm
    value: str  # the artifact id, the absolute path, the s3 URI, the hub id or the URL
    reason: str = ""  # why the form is "invalid"


def artifact_ref_uri(artifact_id: str) -> str:
    """How an API response names a stored artifact: ``internal://<id>`` (the SPEC's form), never a server path."""
    return f"{ARTIFACT_SCHEME}{artifact_id}"


def parse_reference(raw: str, kind: RefKind) -> ParsedRef:
    """Classify ``raw`` as the reference form it is; decides nothing about access."""
    text = raw.strip()
    if not text or "\x00" in text:
        return ParsedRef("invalid", text, "empty or malformed")
    if text.startswith(ARTIFACT_SCHEME):
        inner = text[len(ARTIFACT_SCHEME) :].strip("/")
        if id_prefix(inner) is None:
            return ParsedRef("invalid", text, f"{ARTIFACT_SCHEME} must name an artifact id")
        return ParsedRef("artifact", inner)
    if id_prefix(text) is not None:
        return ParsedRef("artifact", text)
    if text.startswith(("ds_", "ckpt_", "dp_", "ev_")):
        return ParsedRef("invalid", text, "not a well-formed artifact id")
    if kind == "url":
        parts = urlsplit(text)
        if parts.scheme in ("http", "https") and parts.hostname:
            return ParsedRef("http", text)
        return ParsedRef("invalid", text, "expected an http(s):// URL")
    if text.startswith("file:"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            return ParsedRef("invalid", text, "only file:///absolute/path URIs are accepted")
        return _local(unquote(parts.path))
    if text.startswith("s3://"):
        return ParsedRef("s3", text)
    if text.startswith("hf://"):
        return ParsedRef("hf", text[len("hf://") :].strip("/"))
    if _SCHEME_RE.match(text):
        if kind == "teacher" and text.startswith(("http://", "https://")):
            return ParsedRef("http", text)
        return ParsedRef("invalid", text, "unsupported URI scheme")
    if text.startswith("/"):
        return _local(text)
    if text.startswith((".", "~")) or "\\" in text:
        return ParsedRef("relative", text)
    if kind in ("model", "teacher") and is_catalog_name(text):
        return ParsedRef("catalog", text)
    if kind == "teacher" and "/" in text:
        return ParsedRef("provider", text)
    if kind == "model" and _HUB_ID_RE.match(text) and ".." not in text:
        return ParsedRef("hf", text)
    return ParsedRef("relative", text)


def _local(path: str) -> ParsedRef:
    candidate = PurePosixPath(path)
    if not candidate.is_absolute() or ".." in candidate.parts:
        return ParsedRef("invalid", path, "a local path must be absolute, without '..'")
    return ParsedRef("path", str(candidate))


def job_references(spec: BaseModel) -> list[JobReference]:
    """Every reference ``spec`` carries (nested models included), in field order."""
    found: list[JobReference] = []
    _walk(spec, "", found)
    return found


def referenced_artifacts(spec: BaseModel) -> list[tuple[JobReference, str]]:
    """(reference, artifact id) for every reference that names a stored artifact (an id or ``internal://``)."""
    named = []
    for ref in job_references(spec):
        parsed = parse_reference(ref.value, ref.kind)
        if parsed.form == "artifact":
            named.append((ref, parsed.value))
    return named


def ref_marker(info: FieldInfo) -> Ref | None:
    """The field's ``Ref`` marker, also when the marked type sits inside ``X | None``."""
    for meta in info.metadata:
        if isinstance(meta, Ref):
            return meta
    for arg in get_args(info.annotation):
        if get_origin(arg) is Annotated:
            for meta in get_args(arg)[1:]:
                if isinstance(meta, Ref):
                    return meta
    return None


def _walk(model: BaseModel, prefix: str, found: list[JobReference]) -> None:
    for name, info in type(model).model_fields.items():
        value: Any = getattr(model, name)
        if value is None:
            continue
        path = f"{prefix}{name}"
        marker = ref_marker(info)
        if marker is not None and isinstance(value, list | tuple):
            # A list of references (a container's inputs): each item is checked on its own.
            found.extend(JobReference(f"{path}.{i}", marker.kind, str(item)) for i, item in enumerate(value))
        elif marker is not None:
            found.append(JobReference(path, marker.kind, str(value)))
        elif isinstance(value, BaseModel):
            _walk(value, f"{path}.", found)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    _walk(item, f"{path}.{i}.", found)


# String fields that name nothing a job reads, as "<contract>.<field>"
# (tests/unit/test_refs.py fails on any string field neither marked with Ref nor listed here).
NOT_REFERENCES: frozenset[str] = frozenset(
    {
        "Resources.gpu_type",
        "Resources.tier",
        "ToleranceChecker.metrics",  # names of output metrics to compare, not inputs
        "AuditSpec.idempotency_key",
        "DistillSpec.idempotency_key",
        "GenerateSpec.idempotency_key",
        "TrainSpec.idempotency_key",
        "EvaluateSpec.idempotency_key",
        "DeploySpec.idempotency_key",
        "ContainerSpec.idempotency_key",
        "AuditSpec.text_columns",
        "JudgeConfig.model",  # the model name sent to the judge endpoint, not a model to load
        "JudgeConfig.api_key_env",
        "DistillSpec.teacher_api_key_env",
        "GenerateSpec.teacher_api_key_env",
        "DistillSpec.system_prompt",
        "GenerateSpec.domain",
        "LoraConfig.target_modules",
        "EvaluateSpec.metrics",
        "EvaluateSpec.benchmark",  # lm-eval task names, whose data comes from the worker's datasets cache
        # A benchmark task's templates and labels render the job's own (resolved) rows; they read nothing.
        "BenchmarkTask.name",
        "BenchmarkTask.output_type",
        "BenchmarkTask.doc_to_text",
        "BenchmarkTask.doc_to_target",
        "BenchmarkTask.doc_to_choice",
        "BenchmarkTask.choices",
        "BenchmarkTask.target_delimiter",
        "BenchmarkTask.metrics",
        "BenchmarkTask.until",
        "DeploySpec.protocol",
        "ContainerSpec.image",  # pulled by the kubelet from a registry, never from the artifact store
        "ContainerSpec.command",
        "ContainerSpec.args",
    }
)
