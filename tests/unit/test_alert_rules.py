"""The chart's alert rules: valid for Prometheus, and each alert fires (and stays quiet) as its
promtool unit tests say (charts/nexa/rules/tests/), with promtool built from the Go module proxy."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "nexa" / "rules" / "nexa-alerts.yaml"
RULE_TESTS = ROOT / "charts" / "nexa" / "rules" / "tests" / "nexa-alerts.test.yaml"


@cache
def promtool() -> str:
    built = subprocess.run(
        [str(ROOT / "scripts" / "get_promtool.sh")], capture_output=True, text=True, timeout=3600
    )
    if built.returncode != 0:
        if shutil.which("go") is None:
            pytest.skip("promtool needs Go to build (scripts/get_promtool.sh)")
        pytest.fail(f"scripts/get_promtool.sh failed:\n{built.stderr[-3000:]}")
    return built.stdout.strip().splitlines()[-1]


def test_the_rules_are_valid() -> None:
    checked = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_fires_and_stays_quiet_as_its_tests_say() -> None:
    ran = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_every_alert_has_a_test_a_severity_and_a_summary() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {r["alert"] for r in rules} <= tested, "an alert without a test that makes it fire"
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
