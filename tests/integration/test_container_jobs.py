"""Standalone container jobs with a real runtime: a real gateway, real worker processes and podman
running an image imported from a busybox rootfs tarball (no registry is needed or reachable).

Skipped only where podman is not installed (``make services`` installs it); a podman that is
installed but cannot run a container fails the test with podman's own error.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.gateway_proc import GatewayFactory, GatewayProcess, WorkerFactory, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

IMAGE = "localhost/nexa-test-busybox:1"
BUSYBOX_TOOLS = ("sh", "cat", "echo", "ls", "mkdir", "touch", "sleep", "printf", "tr")


def _podman() -> str:
    path = shutil.which("podman")
    if path is None:
        pytest.skip(
            "podman is not installed (apt-get install -y podman runc busybox-static; `make services`)"
        )
    return path


def _busybox() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).is_file():
            return Path(candidate)
    pytest.fail("busybox is not installed: apt-get install -y busybox-static (the test image is made of it)")


def _smoke(podman: str, oci: str | None) -> subprocess.CompletedProcess[str]:
    from nexa_engines.container.engine import _rlimits

    argv = [podman, *(["--runtime", oci] if oci else []), "run", "--rm", "--pull=never", "--network=none"]
    argv += [f"--ulimit={k}={s}:{h}" for k, (s, h) in _rlimits().items()]
    return subprocess.run([*argv, IMAGE, "/bin/true"], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The worker's settings for a podman that runs the test image here (imported once)."""
    podman = _podman()
    if subprocess.run([podman, "image", "exists", IMAGE], capture_output=True).returncode != 0:
        root = tmp_path_factory.mktemp("rootfs")
        for sub in ("bin", "tmp", "inputs", "outputs"):
            (root / sub).mkdir()
        shutil.copy2(_busybox(), root / "bin" / "busybox")
        for tool in ("true", *BUSYBOX_TOOLS):
            (root / "bin" / tool).symlink_to("busybox")
        tarball = root.parent / "rootfs.tar"
        with tarfile.open(tarball, "w") as tar:
            for entry in sorted(root.iterdir()):
                tar.add(entry, arcname=entry.name)
        done = subprocess.run([podman, "import", str(tarball), IMAGE], capture_output=True, text=True)
        assert done.returncode == 0, f"podman import failed: {done.stderr}"
    # crun refuses hosts with a hybrid cgroup layout; runc runs there (docs/containers.md).
    tried = {}
    for oci in (None, "runc"):
        if oci and shutil.which(oci) is None:
            continue
        done = _smoke(podman, oci)
        if done.returncode == 0:
            return {
                "NEXA_CONTAINER_RUNTIME": "podman",
                "NEXA_CONTAINER_ALLOW_NETWORK": "1",  # the owner lets containers that ask have a network
                **({"NEXA_CONTAINER_OCI_RUNTIME": oci} if oci else {}),
            }
        tried[oci or "default"] = done.stderr.strip()
    pytest.fail(f"podman is installed but cannot run a container here: {tried}")


def _submit(gw: GatewayProcess, body: dict[str, Any]) -> str:
    r = httpx.post(f"{gw.url}/v1/container", json=body, headers=gw.headers(), timeout=30)
    assert r.status_code == 201, r.text
    return str(r.json()["job_id"])


def _job(gw: GatewayProcess, job_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{gw.url}/v1/jobs/{job_id}", headers=gw.headers(), timeout=30).json())


def _wait(gw: GatewayProcess, job_id: str, *, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job = _job(gw, job_id)
    while job["status"] not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}: {job.get('events')}"
        time.sleep(0.3)
        job = _job(gw, job_id)
    return job


def _logs(gw: GatewayProcess, job_id: str) -> str:
    r = httpx.get(f"{gw.url}/v1/jobs/{job_id}/logs?follow=false", headers=gw.headers(), timeout=30)
    return r.text


def _wait_ready(worker: WorkerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while "ready:" not in worker.log_tail(200):
        assert worker.is_running, worker.log_tail()
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.2)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


SCRIPT = """
set -e
ls /inputs/$DS > /outputs/input-files.txt
cat /inputs/$DS/data.jsonl > /outputs/copy.jsonl
if touch /inputs/$DS/new 2>/dev/null; then echo input-writable; exit 3; fi
echo input-read-only
mkdir -p /outputs/sub
printf 'hello from %s\\n' "$GREETING" > /outputs/sub/hello.txt
ls /sys/class/net | tr '\\n' ' ' > /outputs/net.txt
echo to-stderr >&2
"""


def test_a_container_job_runs_with_podman_and_a_worker_without_a_runtime_leaves_it(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory, podman_env: dict[str, str], tmp_path: Path
) -> None:
    gw = gateway_factory()
    rows = b'{"text": "a"}\n{"text": "b"}\n'
    data = tmp_path / "data.jsonl"
    data.write_bytes(rows)
    up = httpx.post(
        f"{gw.url}/v1/datasets",
        files={"file": ("data.jsonl", rows, "application/octet-stream")},
        headers=gw.headers(),
        timeout=30,
    )
    assert up.status_code == 201, up.text
    ds = up.json()["dataset_id"]

    # A worker without a runtime registers and polls, but never takes the container job.
    bare = worker_factory(gw, "no-runtime", extra_env={"NEXA_CONTAINER_RUNTIME": "none"})
    _wait_ready(bare)
    assert "container" not in bare.log_tail(200).split("job types", 1)[1].splitlines()[0]
    body = {
        "image": IMAGE,
        "command": ["/bin/sh", "-c", SCRIPT],
        "env": {"DS": ds, "GREETING": "nexa"},
        "inputs": [ds],
        "resources": {"cpu": 1, "memory_gb": 0.25},
        "max_retries": 0,
    }
    job_id = _submit(gw, body)
    time.sleep(4)  # several claim polls of the worker without a runtime
    assert _job(gw, job_id)["status"] == "pending"

    worker_factory(gw, "podman", extra_env=podman_env)
    job = _wait(gw, job_id)
    assert job["status"] == "completed", (job.get("error"), _logs(gw, job_id))
    result = job["result"]
    assert result["exit_code"] == 0 and result["runtime"].startswith("podman")
    logs = _logs(gw, job_id)
    assert "input-read-only" in logs and "[stderr] to-stderr" in logs, logs

    out = result["output_dataset_id"]
    info = httpx.get(f"{gw.url}/v1/artifacts/{out}", headers=gw.headers(), timeout=30)
    assert info.status_code == 200, info.text
    manifest = info.json()["manifest"]
    files = {f["path"]: f for f in manifest["files"]}
    assert files["copy.jsonl"]["sha256"] == _sha(rows)
    assert files["sub/hello.txt"]["sha256"] == _sha(b"hello from nexa\n")
    assert files["input-files.txt"]["sha256"] == _sha(b"data.jsonl\nmanifest.json\n")
    assert files["net.txt"]["sha256"] == _sha(b"lo "), "no network unless the spec asks for one"
    assert manifest["job_id"] == job_id and manifest["inputs"][0]["artifact_id"] == ds
    assert manifest["config"]["env"] == ["DS", "GREETING"], "env values stay out of the manifest"

    # With network: true the container gets an interface besides lo.
    net_job = _submit(
        gw,
        {
            "image": IMAGE,
            "command": ["/bin/sh", "-c", "ls /sys/class/net | tr '\\n' ' ' > /outputs/net.txt"],
            "network": True,
            "max_retries": 0,
        },
    )
    done = _wait(gw, net_job)
    assert done["status"] == "completed", (done.get("error"), _logs(gw, net_job))
    net_manifest = httpx.get(
        f"{gw.url}/v1/artifacts/{done['result']['output_dataset_id']}", headers=gw.headers(), timeout=30
    ).json()["manifest"]
    assert net_manifest["files"][0]["sha256"] != _sha(b"lo ")


def test_container_failures_cancellation_and_missing_images(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory, podman_env: dict[str, str]
) -> None:
    gw = gateway_factory()
    worker_factory(gw, "podman", extra_env=podman_env)
    base = {"image": IMAGE, "max_retries": 2}

    failed = _wait(gw, _submit(gw, {**base, "command": ["/bin/sh", "-c", "echo boom >&2; exit 7"]}))
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "container_failed" and not failed["error"]["retryable"]
    assert "exited with code 7" in failed["error"]["message"] and "boom" in failed["error"]["message"]
    assert failed["attempts"] == 1, "the container's own failure is not retried"

    missing = _wait(gw, _submit(gw, {**base, "image": "localhost/nexa-absent:0"}))
    assert missing["status"] == "failed" and missing["error"]["code"] == "image_not_found"
    assert "--pull=never" in missing["error"]["message"]

    sleeper = _submit(gw, {**base, "command": ["/bin/sh", "-c", "echo started; sleep 300"]})
    deadline = time.monotonic() + 60
    while "started" not in _logs(gw, sleeper):
        assert time.monotonic() < deadline, _job(gw, sleeper)
        time.sleep(0.3)
    name = f"nexa-{sleeper}-1"
    listed = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True)
    assert name in listed.stdout.split()
    r = httpx.post(f"{gw.url}/v1/jobs/{sleeper}/cancel", headers=gw.headers(), timeout=30)
    assert r.status_code == 200, r.text
    assert _wait(gw, sleeper, timeout=60)["status"] == "cancelled"
    deadline = time.monotonic() + 30
    while (
        name
        in subprocess.run(
            ["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True
        ).stdout.split()
    ):
        assert time.monotonic() < deadline, f"{name} was not removed after the cancel"
        time.sleep(0.3)

    timed = _wait(gw, _submit(gw, {**base, "command": ["/bin/sleep", "60"], "timeout_seconds": 2}))
    assert timed["status"] == "failed" and timed["error"]["code"] == "timeout", timed["error"]
