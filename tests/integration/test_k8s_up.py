"""``make k8s-up``: one command gives a cluster with GPU nodes, the CRDs and the operator; Ctrl-C ends it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.k8s import binary_dir, missing_binaries

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


def _wait(what: str, check, timeout: float) -> object:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_k8s_up_runs_an_example_nexajob_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    pytest.importorskip("kopf")
    if missing_binaries(binary_dir()):
        pytest.skip("the k8s test binaries are not built (make k8s-testenv)")
    ready = tmp_path / "ready"
    log = (tmp_path / "k8s-up.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "scripts" / "k8s_up.py"),
            "--dir",
            str(tmp_path / "k8s"),
            "--ready-file",
            str(ready),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait("the cluster to be up", lambda: ready.exists() or process.poll() is not None, 240)
        assert process.poll() is None, (tmp_path / "k8s-up.log").read_text()
        printed = (tmp_path / "k8s-up.log").read_text()
        kubeconfig = ready.read_text()
        assert f"export KUBECONFIG={kubeconfig}" in printed
        # The kubectl it told the user to run.
        kubectl = next(
            line.split()[0] for line in printed.splitlines() if line.strip().endswith(" get nodes")
        )

        def run(*args: str) -> str:
            done = subprocess.run(
                [kubectl, "--kubeconfig", kubeconfig, *args], capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        nodes = json.loads(run("get", "nodes", "-o", "json"))["items"]
        assert any(n["status"]["capacity"].get("nvidia.com/gpu") == "8" for n in nodes)
        run("apply", "-n", "default", "-f", str(REPO / "examples" / "nexajob-audit.yaml"))

        def reconciled() -> bool:
            obj = json.loads(run("get", "nj", "example-audit", "-n", "default", "-o", "json"))
            return bool((obj.get("status") or {}).get("attempts"))

        _wait("the operator to start the example's first attempt", reconciled, 120)
        assert "example-audit-a1" in run("get", "jobs", "-n", "default")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        log.close()
    assert code == 0, (tmp_path / "k8s-up.log").read_text()
