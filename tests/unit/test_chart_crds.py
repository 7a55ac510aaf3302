"""The chart's CRDs are the generated ones, and there is a valid example NexaJob for every job type."""

from __future__ import annotations

import pytest

from nexa.contracts import JobType
from tests.fixtures.helm import CHART, REPO_ROOT, example_manifests

crdgen = pytest.importorskip("nexa_operator.crdgen")
builders = pytest.importorskip("nexa_operator.builders")


def test_chart_crds_match_the_generator() -> None:
    chart_crds = CHART / "crds"
    stale = crdgen.stale_files(chart_crds)
    assert stale == [], f"charts/nexa/crds is stale: run `python -m nexa_operator.crdgen --out {chart_crds}`"
    names = {p.name for p in chart_crds.glob("*.yaml")}
    assert names == set(crdgen.rendered()), "charts/nexa/crds holds files the generator does not make"
    for name in names:
        assert (chart_crds / name).read_text() == (REPO_ROOT / "crds" / name).read_text(), name


def test_one_example_per_job_type_and_each_is_a_valid_contract() -> None:
    examples = example_manifests()
    by_type = {doc["spec"]["type"]: name for name, doc in examples.items()}
    assert set(by_type) == {t.value for t in JobType}
    assert len(examples) == len(JobType)
    for name, doc in examples.items():
        assert doc["apiVersion"] == "nexa.run/v1alpha1" and doc["kind"] == "NexaJob", name
        assert "namespace" not in doc["metadata"], f"{name}: examples apply to the namespace you choose"
        job_type, _ = builders.validated_spec(doc)
        assert name == f"nexajob-{job_type.value}.yaml"
