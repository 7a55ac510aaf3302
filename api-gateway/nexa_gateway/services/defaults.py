"""The platform's defaults for what a request may leave out, filled in at submit.

The SPEC's calls name no teacher (``client.distill("ds_123")``) and train with a
default base model; the platform decides what those are (``NEXA_DEFAULT_TEACHER``,
``NEXA_DEFAULT_MODEL``). They are written into the job's spec before it is
checked and stored, so the job shows what it really ran with.
"""

from __future__ import annotations

from nexa.contracts import DistillSpec, GenerateSpec, JobOptions, TrainSpec
from nexa_gateway.errors import ApiError
from nexa_gateway.settings import Settings


def with_platform_defaults(spec: JobOptions, settings: Settings) -> JobOptions:
    """``spec`` with the platform's default teacher or base model where it names none."""
    if isinstance(spec, DistillSpec | GenerateSpec) and spec.teacher is None:
        if settings.default_teacher is None:
            raise ApiError(
                422,
                "teacher_required",
                "this request names no teacher and the platform has no default teacher: pass 'teacher' "
                "(a model catalog name, provider/model, dp_… or ckpt_…), or set NEXA_DEFAULT_TEACHER",
                field="teacher",
            )
        return spec.model_copy(update={"teacher": settings.default_teacher})
    if isinstance(spec, TrainSpec) and spec.model is None:
        return spec.model_copy(update={"model": settings.default_model})
    return spec
