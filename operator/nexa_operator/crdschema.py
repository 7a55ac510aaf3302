"""The NexaJob, NexaEndpoint and NexaPipeline CustomResourceDefinitions, generated from the contracts.

Pure: builds the CRD objects as dicts (``nexajob_crd()``, ``nexaendpoint_crd()``, ``nexapipeline_crd()``);
``python -m nexa_operator.crdgen`` writes them to ``crds/``. Pydantic's JSON Schema
becomes a *structural* schema: ``$ref`` inlined, ``X | None`` as ``nullable: true``,
``extra="forbid"`` left to pruning and strict field validation, free-form dicts as
``x-kubernetes-preserve-unknown-fields``, descriptions kept (``kubectl explain``
shows them). The wire mapping the gateway and the operator share is in
``nexa.contracts.nexajob``.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from pydantic import BaseModel

from nexa.contracts.common import JobOptions
from nexa.contracts.jobs import JOB_SPECS, DeploySpec, JobType
from nexa.contracts.nexajob import (
    CATEGORY,
    GROUP,
    NEXAENDPOINT_KIND,
    NEXAENDPOINT_PLURAL,
    NEXAJOB_KIND,
    NEXAJOB_PLURAL,
    SHARED_FIELDS,
    VERSION,
    NexaEndpointStatus,
    NexaJobStatus,
)
from nexa.contracts.nexapipeline import (
    APPROVE_ANNOTATION_PREFIX,
    NEXAPIPELINE_KIND,
    NEXAPIPELINE_PLURAL,
    NOT_IN_CLUSTER_MODE,
    NexaPipelineStatus,
)
from nexa.contracts.pipelines import PipelineSpec

# --- JSON Schema → structural schema ---------------------------------------------------

_KEPT_FORMATS = {"int32", "int64", "float", "double", "byte", "date", "date-time", "password"}
_DROPPED_KEYS = {"title", "default", "examples", "propertyNames", "$schema"}


class SchemaError(ValueError):
    """A contract uses a JSON Schema construct Kubernetes cannot express."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    name = str(ref).rsplit("/", 1)[-1]
    merged: dict[str, Any] = copy.deepcopy(defs[name])
    # Keys next to a $ref (a field's description) win over the target's own.
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    return merged


def _describe_default(node: dict[str, Any]) -> str | None:
    if "default" not in node or node["default"] is None:
        return None
    value = node["default"]
    if isinstance(value, dict | list | str) and not value:
        return None
    return json.dumps(value, sort_keys=True)


# "Also accepted as `dataset_id`." speaks of the HTTP API's and SDK's aliases; a NexaJob's schema has
# one name per field (the apiserver would prune the alias), so `kubectl explain` leaves it out.
_ALIAS_SENTENCE = re.compile(r"\s*Also accepted as `[a-z_]+`[^.]*\.")


def resource_text(description: str) -> str:
    """A contract's field description as `kubectl explain` should say it of the resource."""
    return _ALIAS_SENTENCE.sub("", description).strip()


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One JSON Schema node (pydantic's) as a Kubernetes structural schema node."""
    node = _resolve(node, defs)
    if "description" in node:
        node = {**node, "description": resource_text(node["description"])}
    out: dict[str, Any] = {}
    variants = node.get("anyOf") or node.get("oneOf")
    if variants is not None:
        non_null = [v for v in variants if v.get("type") != "null"]
        if len(non_null) != 1:
            raise SchemaError(f"a union of {len(non_null)} non-null types has no structural form: {variants}")
        inner = structural(non_null[0], defs)
        if len(non_null) < len(variants):
            inner["nullable"] = True
        for key in ("description",):
            if key in node:
                inner[key] = node[key]
        default = _describe_default(node)
        if default is not None:
            inner["description"] = f"{inner.get('description', '').rstrip()} Default: {default}.".strip()
        return inner
    for key, value in node.items():
        if key in _DROPPED_KEYS or key in ("anyOf", "oneOf", "$defs"):
            continue
        if key == "properties":
            out["properties"] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out["items"] = structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out["additionalProperties"] = structural(value, defs)
            # ``false`` (extra="forbid"): the apiserver prunes or, with strict field
            # validation (kubectl's default), refuses unknown fields by itself.
        elif key == "patternProperties":
            # Kubernetes cannot constrain map keys by pattern; the operator's pydantic
            # validation still does.
            schemas = list(value.values())
            if len(schemas) != 1:
                raise SchemaError(f"several patternProperties cannot be expressed: {value}")
            out["additionalProperties"] = structural(schemas[0], defs)
        elif key == "const":
            out["enum"] = [value]
        elif key == "format":
            if value in _KEPT_FORMATS:
                out["format"] = value
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        else:
            out[key] = copy.deepcopy(value)
    if "enum" in out and "type" not in out:
        kinds = {type(v) for v in out["enum"]}
        if kinds == {str}:
            out["type"] = "string"
        elif kinds == {int}:
            out["type"] = "integer"
        else:
            raise SchemaError(f"an enum of mixed types has no structural form: {out['enum']}")
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "object" and "additionalProperties" in out:
        # dict[str, Any] values are free-form.
        values = out["additionalProperties"]
        if values == {} or values is True:
            del out["additionalProperties"]
            out["x-kubernetes-preserve-unknown-fields"] = True
    if "type" not in out and "x-kubernetes-preserve-unknown-fields" not in out:
        # dict[str, Any] values and Any fields: free-form JSON.
        out["x-kubernetes-preserve-unknown-fields"] = True
    default = _describe_default(node)
    if default is not None:
        out["description"] = f"{out.get('description', '').rstrip()} Default: {default}.".strip()
    return out


def model_schema(model: type[BaseModel], *, by_alias: bool = False) -> dict[str, Any]:
    """A pydantic model's validation schema as a structural schema, descriptions kept."""
    raw = model.model_json_schema(mode="validation", by_alias=by_alias)
    return structural(raw, raw.get("$defs", {}))


def _per_type_schema(job_type: JobType) -> dict[str, Any]:
    schema = model_schema(JOB_SPECS[job_type])
    schema["properties"] = {k: v for k, v in schema["properties"].items() if k not in SHARED_FIELDS}
    required = [k for k in schema.get("required", []) if k not in SHARED_FIELDS]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    schema["description"] = (
        f"{schema.get('description', '').strip()} Required exactly when spec.type is '{job_type.value}'."
    ).strip()
    schema["x-kubernetes-validations"] = [
        {"rule": "self == oldSelf", "message": f"spec.{job_type.value} is immutable; create a new NexaJob"}
    ]
    return schema


def nexajob_spec_schema() -> dict[str, Any]:
    """The structural schema of ``NexaJob.spec``."""
    shared = model_schema(JobOptions)
    properties: dict[str, Any] = {
        "type": {
            "type": "string",
            "enum": [t.value for t in JobType],
            "description": "The job type; its spec goes in the field of the same name.",
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec.type is immutable"}],
        },
        "tenant": {
            "type": "string",
            "maxLength": 63,
            "description": "The tenant that owns the job (set by the gateway).",
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec.tenant is immutable"}],
        },
        "suspend": {
            "type": "boolean",
            "description": "Pause the job: its Kubernetes Job is suspended until this is false again.",
        },
        "cancel": {
            "type": "boolean",
            "description": "Cancel the job for good: its pods stop and it ends Cancelled. Cannot be undone.",
        },
    }
    properties.update(shared["properties"])
    properties["resources"] = copy.deepcopy(properties["resources"])
    properties["resources"].setdefault("x-kubernetes-validations", []).append(
        {"rule": "self == oldSelf", "message": "spec.resources is immutable"}
    )
    for job_type in JobType:
        properties[job_type.value] = _per_type_schema(job_type)
    rules = [
        {
            "rule": f"has(self.{t.value}) == (self.type == '{t.value}')",
            "message": f"spec.{t.value} must be set exactly when spec.type is '{t.value}'",
        }
        for t in JobType
    ]
    rules.append(
        {
            "rule": "!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)",
            "message": "a cancelled NexaJob cannot be un-cancelled",
        }
    )
    return {
        "type": "object",
        "description": "What to run: the job type, its typed spec, and the options every job shares.",
        "required": ["type"],
        "properties": properties,
        "x-kubernetes-validations": rules,
    }


def nexaendpoint_spec_schema() -> dict[str, Any]:
    """The structural schema of ``NexaEndpoint.spec`` (a deploy's serving fields plus resources)."""
    deploy = model_schema(DeploySpec)
    kept = {k: v for k, v in deploy["properties"].items() if k not in SHARED_FIELDS or k == "resources"}
    kept["tenant"] = {"type": "string", "maxLength": 63, "description": "The tenant that owns the endpoint."}
    kept["image"] = {
        "type": "string",
        "maxLength": 500,
        "description": "Serving image; the operator's default serving image when unset.",
    }
    return {
        "type": "object",
        "description": "A KServe-style inference service for one checkpoint.",
        "required": ["checkpoint_id"],
        "properties": kept,
        "x-kubernetes-validations": [
            {
                "rule": "!has(self.min_replicas) || !has(self.max_replicas) || self.min_replicas <= self.max_replicas",
                "message": "min_replicas must not exceed max_replicas",
            },
            {"rule": "self.checkpoint_id == oldSelf.checkpoint_id", "message": "checkpoint_id is immutable"},
        ],
    }


def nexapipeline_spec_schema() -> dict[str, Any]:
    """The structural schema of ``NexaPipeline.spec``: the ``PipelineSpec`` contract, as the operator runs it."""
    schema = model_schema(PipelineSpec)
    properties = {k: v for k, v in schema["properties"].items() if k not in NOT_IN_CLUSTER_MODE}
    # metadata.name already names the object; spec.name (shared with the HTTP API's form) may repeat it.
    properties["name"]["description"] = "A name to find the pipeline by. Default: the NexaPipeline's name."
    step = properties["steps"]["items"]["properties"]
    step["approval"]["description"] = (
        f'Hold the step until the NexaPipeline has the annotation `{APPROVE_ANNOTATION_PREFIX}<step>: "true"`. '
        "Default: false."
    )
    step["cache"]["description"] = (
        "Reuse an earlier run's outputs (standalone mode only: in cluster mode every step runs). Default: true."
    )
    return {
        "type": "object",
        "description": "The pipeline: its steps, chained by placeholders, with gates between them "
        "(the body of `POST /v1/pipelines` without idempotency_key and max_cost_cents).",
        "required": [r for r in schema["required"] if r != "name"],
        "properties": properties,
        "x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": "spec is immutable; create a new NexaPipeline"}
        ],
    }


def _status_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model_schema(model, by_alias=True)
    conditions = schema["properties"].get("conditions")
    if conditions is not None:
        conditions["x-kubernetes-list-type"] = "map"
        conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    description: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "annotations": {"nexa.run/generated-by": "python -m nexa_operator.crdgen (do not edit)"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def nexajob_crd() -> dict[str, Any]:
    """The ``nexajobs.nexa.run`` CustomResourceDefinition."""
    return _crd(
        kind=NEXAJOB_KIND,
        plural=NEXAJOB_PLURAL,
        short_names=["nj"],
        description="A Nexa job (audit, distill, generate, train, evaluate, deploy, container) run as Kubernetes Jobs.",
        spec=nexajob_spec_schema(),
        status=_status_schema(NexaJobStatus),
        columns=[
            {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
            {"name": "Status", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Progress", "type": "string", "jsonPath": ".status.progressPercent"},
            {"name": "Attempts", "type": "integer", "jsonPath": ".status.attempts", "priority": 1},
            {"name": "Job", "type": "string", "jsonPath": ".status.jobName", "priority": 1},
            {"name": "Message", "type": "string", "jsonPath": ".status.progressMessage", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def nexaendpoint_crd() -> dict[str, Any]:
    """The ``nexaendpoints.nexa.run`` CustomResourceDefinition."""
    return _crd(
        kind=NEXAENDPOINT_KIND,
        plural=NEXAENDPOINT_PLURAL,
        short_names=["nep"],
        description="An inference endpoint serving one checkpoint (Deployment + Service, or a KServe InferenceService).",
        spec=nexaendpoint_spec_schema(),
        status=_status_schema(NexaEndpointStatus),
        columns=[
            {"name": "Checkpoint", "type": "string", "jsonPath": ".spec.checkpoint_id"},
            {"name": "Status", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
            {"name": "URL", "type": "string", "jsonPath": ".status.url"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def nexapipeline_crd() -> dict[str, Any]:
    """The ``nexapipelines.nexa.run`` CustomResourceDefinition."""
    return _crd(
        kind=NEXAPIPELINE_KIND,
        plural=NEXAPIPELINE_PLURAL,
        short_names=["npl"],
        description="A Nexa pipeline: steps of any job type run as NexaJobs, chained by their outputs, with gates.",
        spec=nexapipeline_spec_schema(),
        status=_status_schema(NexaPipelineStatus),
        columns=[
            {"name": "Step", "type": "string", "jsonPath": ".status.currentStep"},
            {"name": "Status", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Error", "type": "string", "jsonPath": ".status.error.message", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """Every CRD by the file name it is written to under ``crds/``."""
    return {
        f"{GROUP}_{NEXAJOB_PLURAL}.yaml": nexajob_crd(),
        f"{GROUP}_{NEXAENDPOINT_PLURAL}.yaml": nexaendpoint_crd(),
        f"{GROUP}_{NEXAPIPELINE_PLURAL}.yaml": nexapipeline_crd(),
    }
