"""The CRDs in crds/ are generated from the contracts, structural, and carry their CEL rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from nexa.contracts import JOB_SPECS, AuditSpec, JobType, TrainSpec
from nexa.contracts.nexajob import SHARED_FIELDS, job_id_of, nexajob_object, nexajob_payload, resource_name
from nexa_operator import crdgen
from nexa_operator.crdschema import SchemaError, all_crds, nexajob_crd, structural

CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"


def _walk(node: Any, path: str = ""):  # type: ignore[no-untyped-def]
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def _spec_schema() -> dict[str, Any]:
    return nexajob_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_crds_dir_is_up_to_date() -> None:
    stale = crdgen.stale_files(CRDS_DIR)
    assert stale == [], f"crds/ is stale: {stale}; run `python -m nexa_operator.crdgen`"


def test_check_mode_reports_a_hand_edited_file(tmp_path: Path) -> None:
    crdgen.write(tmp_path)
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 0
    target = tmp_path / "nexa.run_nexajobs.yaml"
    target.write_text(target.read_text().replace("Number of GPUs", "Number of GPUz"))
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_schema_is_structural(name: str) -> None:
    schema = all_crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "oneOf" not in node, path
        assert node.get("additionalProperties") is not False, path
        if path.endswith(".properties") or "x-kubernetes-validations" in path.rsplit(".", 1)[-1]:
            continue
        if path.endswith("x-kubernetes-validations") or "x-kubernetes-validations[" in path:
            continue
        if "type" in node or "x-kubernetes-preserve-unknown-fields" in node:
            continue
        # every schema node below properties/items has a type or is explicitly free-form
        if path.split(".")[-2:-1] == ["properties"] or path.endswith(".items"):
            pytest.fail(f"{name}{path} has neither a type nor x-kubernetes-preserve-unknown-fields")


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_crd_validates_against_the_kubernetes_schema(name: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    text = (CRDS_DIR / name).read_text()
    kubernetes_validate.validate(yaml.safe_load(text), "1.32.0", strict=True)


def test_every_job_type_has_its_typed_spec_and_a_cel_rule() -> None:
    spec = _spec_schema()
    rules = {r["rule"] for r in spec["x-kubernetes-validations"]}
    for job_type in JobType:
        sub = spec["properties"][job_type.value]
        own = set(JOB_SPECS[job_type].model_fields) - set(SHARED_FIELDS)  # the shared ones sit at the top
        assert own <= set(sub["properties"])
        assert f"has(self.{job_type.value}) == (self.type == '{job_type.value}')" in rules
        assert {
            "rule": "self == oldSelf",
            "message": f"spec.{job_type.value} is immutable; create a new NexaJob",
        } in sub["x-kubernetes-validations"]


def test_descriptions_and_nullables_survive() -> None:
    spec = _spec_schema()
    gpus = spec["properties"]["resources"]["properties"]["gpus"]
    assert gpus["description"].startswith("Number of GPUs") and gpus["type"] == "integer"
    gpu_type = spec["properties"]["resources"]["properties"]["gpu_type"]
    assert gpu_type["nullable"] is True and gpu_type["type"] == "string"
    judge = spec["properties"]["audit"]["properties"]["judge"]
    assert judge["nullable"] is True and judge["type"] == "object"
    assert judge["properties"]["timeout_seconds"]["exclusiveMinimum"] is True
    assert spec["properties"]["metadata"]["additionalProperties"] == {"type": "string", "maxLength": 4096}
    assert spec["properties"]["metadata"]["maxProperties"] == 64
    assert spec["properties"]["train"]["properties"]["deepspeed_stage"]["enum"] == [0, 1, 2, 3]


def test_free_form_fields_preserve_unknown_fields_only_there() -> None:
    crd = nexajob_crd()
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["properties"]["result"]["x-kubernetes-preserve-unknown-fields"] is True
    preserved = [p for p, node in _walk(crd) if node.get("x-kubernetes-preserve-unknown-fields")]
    assert all(p.endswith(("result", "metadata")) for p in preserved), preserved


def test_printer_columns_short_name_and_category() -> None:
    crd = nexajob_crd()
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["nj"] and names["categories"] == ["nexa"]
    columns = [
        c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"] if "priority" not in c
    ]
    assert columns == ["Type", "Status", "Progress", "Age"]
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_a_union_of_real_types_is_refused() -> None:
    with pytest.raises(SchemaError):
        structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {})


def test_nexajob_round_trips_a_contract_spec() -> None:
    spec = TrainSpec(dataset_id="ds_" + "a" * 26, model="gpt2", epochs=2, priority=5, max_retries=1)
    obj = nexajob_object(
        job_id="job_" + "b" * 26, tenant_id="tnt_x", namespace="nexa-t", job_type=JobType.train, spec=spec
    )
    assert obj["metadata"]["name"] == "job-" + "b" * 26
    assert obj["spec"]["priority"] == 5 and obj["spec"]["train"]["epochs"] == 2
    assert "priority" not in obj["spec"]["train"]
    job_type, payload = nexajob_payload(obj["spec"])
    assert job_type is JobType.train and TrainSpec.model_validate(payload) == spec
    assert json.loads(json.dumps(obj)) == obj
    assert job_id_of(resource_name("job_" + "c" * 26)) == "job_" + "c" * 26


def test_audit_spec_is_all_under_spec_audit() -> None:
    obj = nexajob_object(
        job_id="job_" + "d" * 26,
        tenant_id="t",
        namespace="n",
        job_type=JobType.audit,
        spec=AuditSpec(dataset_uri="ds_" + "a" * 26),
    )
    assert obj["spec"]["audit"] == {
        k: v
        for k, v in AuditSpec(dataset_uri="ds_" + "a" * 26).model_dump(mode="json", exclude_none=True).items()
        if k in ("dataset_uri", "ngram", "num_perm", "near_dup_threshold", "min_chars", "max_chars", "seed")
    }


def test_kubectl_explain_speaks_of_the_resource_not_the_apis_aliases() -> None:
    from nexa_operator.crdschema import resource_text

    assert resource_text(
        "SFT dataset (`ds_…` id or URI). Also accepted as `dataset_uri` (Forge's name)."
    ) == ("SFT dataset (`ds_…` id or URI).")
    text = json.dumps(nexajob_crd())
    assert "Also accepted as" not in text and "query" not in text.lower()
