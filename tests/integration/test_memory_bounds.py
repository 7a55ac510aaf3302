"""A worker gives the memory of a finished attempt back: two large audits in a row, RSS read from /proc.

Memory is judged against the process's own high-water mark (``VmHWM``), not a
fixed figure, so the test means the same on any machine: the job must have
grown the worker by a lot, and the idle worker afterwards must be back near
where it started, after the first job and after the second.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from nexa_engines.sample_data import generate_sft_dataset
from tests.fixtures.gateway_proc import GatewayFactory, GatewayProcess, WorkerFactory

pytestmark = pytest.mark.integration

MIB = 1 << 20
SIZE = 192 * MIB  # the large upload: far more than the gateway's fixed cost of reading one


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _audit(gw: GatewayProcess, path: Path) -> None:
    url, headers = gw.url, gw.headers()
    r = httpx.post(f"{url}/v1/audit", json={"dataset_uri": str(path)}, headers=headers, timeout=30)
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=30).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            assert job["status"] == "completed", job.get("error")
            return
        time.sleep(0.5)
    pytest.fail(f"audit {job_id} did not finish in 600 s")


def _settled_rss_kib(pid: int, ceiling_kib: int) -> int:
    # The attempt's last report races its cleanup by a moment: give the worker time to go idle.
    deadline = time.monotonic() + 60
    rss = _status_kib(pid, "VmRSS")
    while rss > ceiling_kib and time.monotonic() < deadline:
        time.sleep(0.5)
        rss = _status_kib(pid, "VmRSS")
    return rss


def test_an_idle_worker_returns_the_memory_of_its_last_attempt(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "large.parquet"
    generate_sft_dataset(path, num_rows=200_000, seed=21)
    gw = gateway_factory()
    worker = worker_factory(gw, "measured", extra_args=["--job-types", "audit"])
    small = tmp_path / "small.parquet"
    generate_sft_dataset(small, num_rows=200, seed=1)
    _audit(gw, small)  # engines imported and warm: the baseline is a worker that has run a job
    time.sleep(2.0)  # past the attempt's cleanup
    baseline = _status_kib(worker.pid, "VmRSS")

    for run in (1, 2):
        _reset_peak(worker.pid)
        _audit(gw, path)
        peak = _status_kib(worker.pid, "VmHWM")
        grown = peak - baseline
        assert grown > 200 * 1024, (
            f"the audit should grow the worker by far more than 200 MiB (grew {grown} KiB)"
        )
        # Most of what the job took is handed back: the idle worker keeps under half of it.
        allowed = baseline + grown // 2
        rss = _settled_rss_kib(worker.pid, allowed)
        assert rss <= allowed, (
            f"run {run}: idle worker holds {rss // 1024} MiB; started at {baseline // 1024} MiB, "
            f"peaked at {peak // 1024} MiB"
        )


def _reset_peak(pid: int) -> None:
    # Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def test_uploads_and_downloads_stream_through_the_gateway(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = gateway_factory()
    data = tmp_path / "big.csv"
    with data.open("w") as out:
        out.write("id,text,score\n")
        row = 0
        while out.tell() < SIZE:
            out.write(
                f'{row},"row {row}: the quick brown fox jumps over the lazy dog, twice over",{row % 7}\n'
            )
            row += 1
    headers = gw.headers()
    # Warm: the first upload starts Arrow's thread pools (a fixed cost, not per byte).
    warm = httpx.post(
        f"{gw.url}/v1/datasets", files={"file": ("w.csv", b"id,text\n1,a\n")}, headers=headers, timeout=30
    )
    assert warm.status_code == 201, warm.text
    httpx.get(
        f"{gw.url}/v1/artifacts/{warm.json()['dataset_id']}/files/data.csv", headers=headers, timeout=30
    )
    time.sleep(1.0)
    _reset_peak(gw.pid)
    before = _status_kib(gw.pid, "VmRSS")
    with data.open("rb") as handle:
        r = httpx.post(
            f"{gw.url}/v1/datasets", files={"file": ("big.csv", handle)}, headers=headers, timeout=300
        )
    assert r.status_code == 201, r.text
    assert r.json()["num_rows"] == row
    upload_growth = _status_kib(gw.pid, "VmHWM") - before
    # Streamed and inspected in blocks, the upload costs the gateway a bounded amount (Arrow's
    # readers and thread pools, about 100 MiB here, the same for 64 or 256 MiB); parsed whole, as
    # before, it cost several times the file.
    assert upload_growth * 1024 < SIZE, (
        f"a {SIZE // MIB} MiB upload grew the gateway by {upload_growth // 1024} MiB"
    )

    time.sleep(1.0)
    _reset_peak(gw.pid)
    before = _status_kib(gw.pid, "VmRSS")
    url = f"{gw.url}/v1/artifacts/{r.json()['dataset_id']}/files/data.csv"

    def download(_: int) -> int:
        total = 0
        with httpx.stream("GET", url, headers=headers, timeout=300) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                total += len(chunk)
        return total

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(download, range(4)))
    assert sizes == [data.stat().st_size] * 4
    download_growth = _status_kib(gw.pid, "VmHWM") - before
    assert download_growth < 64 * 1024, f"four downloads grew the gateway by {download_growth // 1024} MiB"
