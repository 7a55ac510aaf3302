"""The reference vocabulary: which request fields name inputs, and how each value is classified."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from pydantic import BaseModel

from nexa.contracts import JOB_SPECS, JobType
from nexa.contracts.refs import NOT_REFERENCES, job_references, parse_reference, ref_marker

CKPT = "ckpt_aaaaaaaaaaaaaaaaaaaaaaaaaa"
DS = "ds_aaaaaaaaaaaaaaaaaaaaaaaaaa"
DP = "dp_aaaaaaaaaaaaaaaaaaaaaaaaaa"


def _string_fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> list[tuple[str, str, bool]]:
    """(owner class, field, is marked) for every field whose type involves str or a URL."""
    out = []
    if model in seen:
        return out
    seen.add(model)
    for name, info in model.model_fields.items():
        text = repr(info.annotation)
        args = typing.get_args(info.annotation)
        nested = [a for a in (info.annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        for sub in nested:
            out.extend(_string_fields(sub, seen))
        if "str" in text or "Url" in text:
            out.append((model.__name__, name, ref_marker(info) is not None))
    return out


def test_every_string_field_is_a_reference_or_listed_as_not_one() -> None:
    """A new field that names an input cannot slip past the resolver unmarked."""
    unclassified = []
    for spec in JOB_SPECS.values():
        for owner, name, marked in _string_fields(spec, set()):
            if (
                not marked
                and f"{owner}.{name}" not in NOT_REFERENCES
                and name not in ("labels", "metadata", "env")
            ):
                unclassified.append(f"{owner}.{name}")
    assert unclassified == []


REFERENCES: list[tuple[JobType, dict[str, Any], list[tuple[str, str]]]] = [
    (JobType.audit, {"dataset_uri": DS}, [("dataset_uri", "dataset")]),
    (
        JobType.audit,
        {"dataset_uri": DS, "judge": {"base_url": "http://judge.example/v1", "model": "m"}},
        [("dataset_uri", "dataset"), ("judge.base_url", "url")],
    ),
    (
        JobType.distill,
        {"dataset_id": DS, "teacher": DP, "teacher_base_url": "https://x.example/v1"},
        [("dataset_id", "dataset"), ("teacher", "teacher"), ("teacher_base_url", "url")],
    ),
    (JobType.generate, {"domain": "law", "teacher": CKPT}, [("teacher", "teacher")]),
    (
        JobType.train,
        {"dataset_id": DS, "model": "/models/base", "warm_start_checkpoint_id": CKPT},
        [("dataset_id", "dataset"), ("model", "model"), ("warm_start_checkpoint_id", "checkpoint")],
    ),
    (JobType.evaluate, {"checkpoint_id": CKPT}, [("checkpoint_id", "checkpoint")]),
    (
        JobType.evaluate,
        {"checkpoint_id": CKPT, "dataset_id": DS},
        [("checkpoint_id", "checkpoint"), ("dataset_id", "dataset")],
    ),
    (JobType.deploy, {"checkpoint_id": CKPT}, [("checkpoint_id", "checkpoint")]),
    (JobType.container, {"image": "busybox"}, []),
]


@pytest.mark.parametrize(("job_type", "payload", "expected"), REFERENCES)
def test_job_references_finds_every_input(
    job_type: JobType, payload: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    spec = JOB_SPECS[job_type].model_validate(payload)
    assert [(r.field, r.kind) for r in job_references(spec)] == expected


FORMS = [
    (DS, "dataset", "artifact", DS),
    (f"internal://{DS}", "dataset", "artifact", DS),
    ("internal://nothing", "dataset", "invalid", None),
    ("ds_short", "dataset", "invalid", None),
    ("/data/x.parquet", "dataset", "path", "/data/x.parquet"),
    ("file:///data/x.parquet", "dataset", "path", "/data/x.parquet"),
    ("file://host/data/x.parquet", "dataset", "invalid", None),
    ("/data/../etc/passwd", "dataset", "invalid", None),
    ("data/x.parquet", "dataset", "relative", None),
    ("./x.parquet", "dataset", "relative", None),
    ("s3://b/k.parquet", "dataset", "s3", "s3://b/k.parquet"),
    ("hf://datasets/o/n/f.parquet", "dataset", "hf", "datasets/o/n/f.parquet"),
    ("gpt2", "model", "catalog", "gpt2"),
    ("Mistral-7B", "model", "catalog", "Mistral-7B"),
    ("gpt-4", "teacher", "catalog", "gpt-4"),
    ("org/model-1.5", "model", "hf", "org/model-1.5"),
    ("hf://org/model", "model", "hf", "org/model"),
    ("checkpoints/../x", "model", "relative", None),
    ("~/models/x", "model", "relative", None),
    (CKPT, "model", "artifact", CKPT),
    ("openai/gpt-4o-mini", "teacher", "provider", "openai/gpt-4o-mini"),
    (DP, "teacher", "artifact", DP),
    ("https://api.example/v1", "url", "http", "https://api.example/v1"),
    ("ftp://x", "url", "invalid", None),
]


@pytest.mark.parametrize(("raw", "kind", "form", "value"), FORMS)
def test_parse_reference_forms(raw: str, kind: Any, form: str, value: str | None) -> None:
    parsed = parse_reference(raw, kind)
    assert parsed.form == form
    if value is not None:
        assert parsed.value == value
