"""Every metric a Grafana dashboard queries is one the gateway, the operator or a serving process really exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from nexa.telemetry import JOB_DURATION_METRIC, JOB_GPU_SECONDS_METRIC
from nexa_gateway.metrics import FinishedJob, GatewayMetrics

DASHBOARDS = Path(__file__).resolve().parents[2] / "charts" / "nexa" / "dashboards"
METRIC = re.compile(r"\b(nexa_[a-z0-9_]+)\b")
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "summary": ("_sum", "_count", ""),
}


def exported_names(registry: CollectorRegistry) -> set[str]:
    """The series names a registry exposes: counters as *_total, histograms as *_bucket/_sum/_count."""
    names = set()
    for family in registry.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


@pytest.fixture(scope="module")
def exported() -> set[str]:
    gateway = GatewayMetrics()
    gateway.add_state_collector(lambda: [])  # what create_app registers: nexa_jobs{type,status}
    operator_metrics = pytest.importorskip("nexa_operator.metrics")
    serving_metrics = pytest.importorskip("nexa_engines.serve.metrics")
    return (
        exported_names(gateway.registry)
        | exported_names(operator_metrics.OperatorMetrics().registry)
        | exported_names(serving_metrics.ServingMetrics("model").registry)
    )


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


@pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.stem)
def test_every_queried_metric_is_exported(path: Path, exported: set[str]) -> None:
    dashboard = json.loads(path.read_text())
    queried = 0
    for title, expr in targets(dashboard):
        names = set(METRIC.findall(expr))
        assert names, f"{path.name}: panel {title!r} queries no Nexa metric: {expr}"
        unknown = names - exported
        assert not unknown, f"{path.name}: panel {title!r} queries {sorted(unknown)}, which nothing exports"
        queried += 1
    assert queried >= 5


def test_dashboards_have_unique_ids_a_datasource_variable_and_non_overlapping_panels() -> None:
    uids = set()
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] not in uids
        uids.add(dashboard["uid"])
        assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
        cells: set[tuple[int, int]] = set()
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, panel["title"]
            area = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert not area & cells, f"{path.name}: panel {panel['title']!r} overlaps another"
            cells |= area
    assert uids == {"nexa-gateway", "nexa-operator", "nexa-jobs", "nexa-endpoints"}


def test_the_checker_notices_a_metric_nobody_exports(exported: set[str]) -> None:
    assert (
        "nexa_http_requests_total" in exported
        and "nexa_operator_reconcile_duration_seconds_bucket" in exported
        and "nexa_endpoint_request_duration_seconds_bucket" in exported
    )
    assert "nexa_endpoint_tokens_total" not in exported


def test_the_jobs_dashboard_shows_durations_failures_and_gpu_hours() -> None:
    dashboard = json.loads((DASHBOARDS / "jobs.json").read_text())
    exprs = " ".join(expr for _, expr in targets(dashboard))
    assert f"histogram_quantile(0.95, sum by (type, le) (rate({JOB_DURATION_METRIC}_bucket" in exprs
    assert f'{JOB_DURATION_METRIC}_count{{phase="Failed"}}' in exprs
    assert f"sum by (type, gpu_type) (increase({JOB_GPU_SECONDS_METRIC}[$__range])) / 3600" in exprs
    # Both modes: the gateway's job table in standalone mode, the operator's NexaJobs in cluster mode.
    assert "max by (type, status) (nexa_jobs)" in exprs and "nexa_operator_nexajobs" in exprs


def _job_series(registry: CollectorRegistry) -> set[tuple[str, tuple[str, ...], str]]:
    """Name, label names and bucket bound of every job-metric sample a registry exposes."""
    return {
        (s.name, tuple(sorted(s.labels)), s.labels.get("le", ""))
        for family in registry.collect()
        if family.name in (JOB_DURATION_METRIC, JOB_GPU_SECONDS_METRIC.removesuffix("_total"))
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_gateway_and_operator_export_the_job_metrics_alike() -> None:
    """One dashboard query reads either mode only if names, labels, phases and buckets all match."""
    operator_metrics = pytest.importorskip("nexa_operator.metrics").OperatorMetrics()
    gateway = GatewayMetrics()
    operator_metrics.observe_finished("uid", "train", "Failed", 30.0, 2, None)
    gateway.observe_job_finished(FinishedJob("train", "failed", 30.0, None, 60.0))

    assert _job_series(gateway.registry) == _job_series(operator_metrics.registry)
    for registry in (gateway.registry, operator_metrics.registry):
        labels = {"type": "train", "phase": "Failed"}
        assert registry.get_sample_value(f"{JOB_DURATION_METRIC}_count", labels) == 1
        assert registry.get_sample_value(JOB_GPU_SECONDS_METRIC, {"type": "train", "gpu_type": "any"}) == 60
