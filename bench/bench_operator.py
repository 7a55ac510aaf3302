"""Operator benchmark: N NexaJobs against the test control plane, beside a raw client.

    .venv/bin/python -m bench.bench_operator --jobs 1000 --concurrency 32

Starts the control plane from ``tests/fixtures/k8s.py`` (or uses ``$NEXA_TEST_KUBECONFIG``),
applies ``crds/``, then in the same run:

1. raw: creates the same N ``batch/v1`` Jobs the operator would build, directly,
   ``--concurrency`` at a time, until the last one shows up on a watch: the API
   server's own throughput on this machine;
2. operator: starts ``python -m nexa_operator`` and creates N NexaJobs at the same
   concurrency; the same kind of watch records when each NexaJob's Job appears.

Jobs are created suspended (``spec.suspend`` on the NexaJob) so the scheduler and
KWOK stay out of the measurement: it is create → Job, not pod start. Reports
create→Job latency p50/p99, both throughputs, and the operator's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nexa.contracts import AuditSpec, JobType
from nexa.contracts.nexajob import nexajob_object
from nexa.ids import new_id
from nexa_operator.builders import build_job
from nexa_operator.config import OperatorConfig
from nexa_operator.kube import KubeClient, collection_path, load_connection

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def cluster() -> Iterator[Any]:
    sys.path.insert(0, str(REPO))
    from tests.fixtures import k8s

    external = os.environ.get(k8s.KUBECONFIG_ENV)
    if external:
        yield k8s._external_cluster(Path(external))
        return
    bin_dir = k8s.ensure_binaries(print)
    with tempfile.TemporaryDirectory() as tmp, k8s.local_cluster(Path(tmp), bin_dir, 180.0) as c:
        yield c


def nexajobs(namespace: str, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        obj = nexajob_object(
            job_id=new_id("job"),
            tenant_id="bench",
            namespace=namespace,
            job_type=JobType.audit,
            spec=AuditSpec(dataset_uri="ds_" + "a" * 26),
        )
        obj["spec"]["suspend"] = True
        out.append(obj)
    return out


async def create_all(
    kube: KubeClient, objs: list[dict[str, Any]], concurrency: int, rate: float = 0.0
) -> dict[str, float]:
    """Create every object, ``concurrency`` at a time (and at most ``rate`` per second when
    positive); returns when each create returned."""
    done: dict[str, float] = {}
    queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
    for i, obj in enumerate(objs):
        queue.put_nowait((i, obj))
    start = time.perf_counter()

    async def worker() -> None:
        while not queue.empty():
            i, obj = queue.get_nowait()
            if rate > 0:
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            await kube.create(obj)
            done[obj["metadata"]["name"]] = time.perf_counter()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def raw_jobs(namespace: str, n: int) -> list[dict[str, Any]]:
    config = OperatorConfig()
    jobs = []
    for obj in nexajobs(namespace, n):
        obj["metadata"]["uid"] = "raw"
        job = build_job(obj, 1, config)
        del job["metadata"]["ownerReferences"]  # no owner exists; the GC would delete them
        jobs.append(job)
    return jobs


class JobWatcher:
    """Records when each Job of a namespace is first seen on a watch.

    Raw JSON over the operator's own aiohttp client: decoding events into the
    ``kubernetes`` package's models would cost the benchmark more CPU than the
    operator it measures, on the same two cores.
    """

    def __init__(self, kube: KubeClient, namespace: str, key_label: str | None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.key_label = key_label  # the label naming the Job's NexaJob; None: the Job's own name
        self.seen: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        path = collection_path("batch/v1", "Job", self.namespace)
        _, version = await self.kube.list_with_version(path)
        self._task = asyncio.create_task(self._follow(path, version))

    async def _follow(self, path: str, version: str) -> None:
        while True:
            async for event_type, obj in self.kube.watch(path, resource_version=version, timeout_seconds=60):
                meta = obj.get("metadata") or {}
                version = meta.get("resourceVersion") or version
                if event_type != "ADDED":
                    continue
                key = (meta.get("labels") or {}).get(self.key_label) if self.key_label else meta.get("name")
                if key and key not in self.seen:
                    self.seen[key] = time.perf_counter()

    async def wait_for(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def control_plane_pids() -> dict[str, int]:
    """The control plane processes this benchmark started (children of this process)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and name in (
            "kube-apiserver",
            "etcd",
            "kube-controller",
            "kube-scheduler",
            "kwok",
        ):
            found[name] = int(entry.name)
    return found


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(c: Any, n: int, concurrency: int, rate: float) -> dict[str, Any]:
    c.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    c.kubectl("wait", "--for=condition=Established", "crd/nexajobs.nexa.run", "--timeout=60s")
    raw_ns, op_ns = c.create_namespace(), c.create_namespace()
    os.environ["KUBECONFIG"] = str(c.kubeconfig)
    kube = KubeClient(load_connection(str(c.kubeconfig)), max_connections=concurrency)

    # Both runs end when the last Job shows up on a watch, so they measure the same thing.
    jobs = raw_jobs(raw_ns, n)
    plane = control_plane_pids()
    raw_watch = JobWatcher(kube, raw_ns, None)
    await raw_watch.start()
    cpu_before, start = cpu_of(plane), time.perf_counter()
    await create_all(kube, jobs, concurrency)
    await raw_watch.wait_for(n, 120)
    raw_seconds = max(raw_watch.seen.values(), default=time.perf_counter()) - start
    raw_cpu = {k: v - cpu_before[k] for k, v in cpu_of(plane).items()}
    await raw_watch.stop()

    env = dict(os.environ, NEXA_OPERATOR_METRICS_PORT="0", NEXA_OPERATOR_RESYNC_SECONDS="60")
    with tempfile.TemporaryFile() as log:
        # As in the operator image, which does not install the ``kubernetes`` package
        # (kopf would import its models when present): a None entry makes imports fail.
        launcher = "import runpy, sys; sys.modules['kubernetes'] = None; runpy.run_module('nexa_operator', run_name='__main__')"
        op = subprocess.Popen(
            [sys.executable, "-c", launcher, "--namespace", op_ns, "--health-port", "0"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        profiler = None
        if os.environ.get("BENCH_PROFILE"):
            profiler = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--pid",
                    str(op.pid),
                    "--rate",
                    "40",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "-o",
                    os.environ["BENCH_PROFILE"],
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        watcher = JobWatcher(kube, op_ns, "nexa.run/nexajob")
        await watcher.start()
        await asyncio.sleep(3.0)  # let the operator start its watches
        objs = nexajobs(op_ns, n)
        cpu_before, op_cpu_before = cpu_of(plane), cpu_seconds(op.pid)
        start = time.perf_counter()
        created = await create_all(kube, objs, concurrency, rate)
        await watcher.wait_for(n, 300)
        end = max(watcher.seen.values()) if watcher.seen else time.perf_counter()
        op_cpu = {k: v - cpu_before[k] for k, v in cpu_of(plane).items()}
        op_cpu["operator"] = cpu_seconds(op.pid) - op_cpu_before
        rss = peak_rss_mb(op.pid)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=30)
        op.terminate()
        op.wait(timeout=30)
        await watcher.stop()
    await kube.close()
    latencies = sorted(watcher.seen[name] - created[name] for name in watcher.seen if name in created)
    op_seconds = end - start

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    return {
        "jobs": n,
        "concurrency": concurrency,
        "rate": rate or "max",
        "jobs_seen": len(watcher.seen),
        "raw_jobs_per_s": n / raw_seconds,
        "operator_jobs_per_s": len(watcher.seen) / op_seconds,
        "ratio": (len(watcher.seen) / op_seconds) / (n / raw_seconds),
        "latency_p50_s": pct(0.50),
        "latency_p99_s": pct(0.99),
        "latency_mean_s": statistics.fmean(latencies) if latencies else float("nan"),
        "operator_peak_rss_mb": rss,
        # CPU seconds each process used during each run: where the two cores went.
        "raw_cpu_s": {k: round(v, 2) for k, v in raw_cpu.items()},
        "operator_run_cpu_s": {k: round(v, 2) for k, v in op_cpu.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_operator", description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="NexaJobs per second in the operator run (default: as fast as the API server takes them); "
        "the latency at a steady rate, where the operator is not behind a queue",
    )
    args = parser.parse_args()
    with cluster() as c:
        result = asyncio.run(measure(c, args.jobs, args.concurrency, args.rate))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
