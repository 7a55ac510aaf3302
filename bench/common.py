"""Shared benchmark plumbing: processes, a throwaway PostgreSQL, an HTTP load generator, tables.

The gateway and PostgreSQL are started with the same code the integration tests use
(tests/fixtures), so a benchmark measures exactly what the tests exercise. The load
generator runs in its own process so it never competes with a server for one GIL.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"

if str(ROOT) not in sys.path:  # tests.fixtures is importable from the repository root only
    sys.path.insert(0, str(ROOT))

from tests.fixtures.gateway_proc import (  # noqa: E402
    GatewayProcess,
    ManagedProcess,
    ProcessStartError,
    clean_environment,
    free_port,
    start_gateway,
)
from tests.fixtures.postgres import PostgresServer, PostgresUnavailable, running_postgres  # noqa: E402

__all__ = [
    "GatewayProcess",
    "LoadResult",
    "LoadSpec",
    "ManagedProcess",
    "PostgresServer",
    "PostgresUnavailable",
    "ProcessStartError",
    "free_port",
    "machine_summary",
    "markdown_table",
    "percentile",
    "process_cpu_seconds",
    "run_load_in_subprocess",
    "start_bare_app",
    "start_bench_gateway",
    "throwaway_postgres",
    "write_dataset",
]

# High enough that the per-key rate limit never answers 429 during a run.
UNLIMITED_RATE_PER_MINUTE = 1_000_000_000


def machine_summary() -> dict[str, str]:
    """What the figures were measured on: CPUs, memory, Python, load average, UTC date."""
    mem_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    load1, load5, load15 = os.getloadavg()
    return {
        "cpus": str(os.cpu_count() or 0),
        "ram_gib": f"{mem_kib / (1 << 20):.1f}",
        "python": platform.python_version(),
        "load_avg": f"{load1:.2f} {load5:.2f} {load15:.2f}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def print_machine(summary: dict[str, str]) -> None:
    """Print the machine line every result table should carry."""
    print(
        f"machine: {summary['cpus']} CPUs, {summary['ram_gib']} GiB RAM, Python {summary['python']}, "
        f"load average {summary['load_avg']}, {summary['date']}"
    )
    if float(summary["load_avg"].split()[0]) > 0.5 * int(summary["cpus"]):
        print("warning: the machine is busy (1-minute load above half the CPUs); figures will be noisy")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table with aligned columns (pasteable into RESULTS.md)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a running process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name may contain spaces; the fields after it are fixed.
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def write_dataset(directory: Path, rows: int = 50) -> Path:
    """A small JSONL text dataset that audit submissions can point at."""
    path = directory / "bench.jsonl"
    with path.open("w") as out:
        for i in range(rows):
            out.write(json.dumps({"text": f"benchmark row {i}: the quick brown fox jumps over the lazy dog"}))
            out.write("\n")
    return path


@contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server in a temporary directory, stopped and deleted on exit."""
    base_dir = Path(tempfile.mkdtemp(prefix="nexa-bench-pg-"))
    try:
        with running_postgres(base_dir) as server:
            yield server
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


def start_bench_gateway(
    home: Path, *, database_url: str | None, dataset_root: Path, lease_seconds: int = 60
) -> GatewayProcess:
    """The real gateway (`python -m nexa_gateway`) with the rate limit out of the way."""
    return start_gateway(
        home,
        name="gateway",
        database_url=database_url,
        allowed_dataset_roots=[dataset_root],
        lease_seconds=lease_seconds,
        heartbeat_seconds=max(1, lease_seconds // 3),
        extra_env={"NEXA_RATE_LIMIT_PER_MINUTE": str(UNLIMITED_RATE_PER_MINUTE)},
    )


def start_bare_app(home: Path, timeout: float = 30.0) -> tuple[ManagedProcess, str]:
    """The bare FastAPI peer (bench/bare_app.py) on a free port; returns it and its base URL."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = ManagedProcess(
        name="bare",
        args=[sys.executable, "-m", "bench.bare_app", "--host", "127.0.0.1", "--port", str(port)],
        env=clean_environment({"PYTHONPATH": str(ROOT)}),
        log_path=home / "bare.log",
        cwd=ROOT,
    )
    process.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_running():
            raise ProcessStartError(f"bare app exited with {process.returncode()}:\n{process.log_tail()}")
        try:
            if httpx.get(f"{url}/items/ready", timeout=2.0).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.stop()
    raise ProcessStartError(f"bare app not ready after {timeout:.0f}s:\n{process.log_tail()}")


@dataclass(frozen=True)
class LoadSpec:
    """One load run: which requests, how many at once, and for how long."""

    base_url: str
    method: str
    paths: tuple[str, ...]  # cycled through, one per request
    expect_status: tuple[int, ...]
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    # When set, every request carries its own `Idempotency-Key: <prefix>-<n>`.
    idempotency_prefix: str | None = None
    concurrency: int = 32
    warmup_s: float = 1.0
    duration_s: float = 10.0
    # The server's process id, to measure its CPU use over exactly the timed phase.
    server_pid: int | None = None


@dataclass
class LoadResult:
    """What one load run measured (the warm-up excluded)."""

    requests: int
    errors: int
    elapsed_s: float
    latencies_ms: list[float]
    client_cpu_s: float
    server_cpu_s: float
    error_samples: list[str]

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _Phase:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.latencies: list[float] = []
        self.errors = 0
        self.samples: list[str] = []
        self.server_cpu_s = 0.0


class RawHttpConnection:
    """One keep-alive HTTP/1.1 connection that writes pre-built requests and reads whole answers.

    httpx spends about 2 ms of client CPU per request (and more with 32 pooled
    connections), which caps one client process at a few hundred requests/s, far
    below what a bare FastAPI app serves; this does the minimum HTTP/1.1 needs.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        """Send one request (head already ends with a blank line) and return (status, body)."""
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        try:
            self._writer.write(head + body)
            raw_head = await self._reader.readuntil(b"\r\n\r\n")
            status, length, chunked, close = _parse_head(raw_head)
            if chunked:
                content = await self._read_chunked()
            else:
                content = await self._reader.readexactly(length) if length else b""
        except BaseException:
            await self.close()
            raise
        if close:
            await self.close()
        return status, content

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readline()).split(b";")[0], 16)
            chunk = await self._reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(chunk[:-2])

    async def close(self) -> None:
        """Close the socket; the next request opens a new one."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()


def _parse_head(raw: bytes) -> tuple[int, int, bool, bool]:
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked, close = 0, False, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            close = value.strip().lower() == "close"
    return status, length, chunked, close


def _request_head(spec: LoadSpec, host: str, path: str, body: bytes, key: str | None) -> bytes:
    lines = [f"{spec.method} {path} HTTP/1.1", f"Host: {host}", "User-Agent: nexa-bench"]
    lines += [f"{name}: {value}" for name, value in spec.headers.items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    if key is not None:
        lines.append(f"Idempotency-Key: {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _drive(spec: LoadSpec) -> LoadResult:
    url = httpx.URL(spec.base_url)
    host, port = url.host, url.port or 80
    counter = itertools.count()
    paths = itertools.cycle(spec.paths)
    body = json.dumps(spec.body).encode() if spec.body is not None else b""
    # Without per-request keys every request for one path is byte-identical: build each once.
    fixed_heads = {p: _request_head(spec, f"{host}:{port}", p, body, None) for p in spec.paths}
    connections = [RawHttpConnection(host, port) for _ in range(spec.concurrency)]

    def server_cpu() -> float:
        return process_cpu_seconds(spec.server_pid) if spec.server_pid is not None else 0.0

    async def one_connection(conn: RawHttpConnection, phase: _Phase) -> None:
        while time.perf_counter() < phase.deadline:
            path = next(paths)
            if spec.idempotency_prefix is None:
                head = fixed_heads[path]
            else:
                key = f"{spec.idempotency_prefix}-{next(counter)}"
                head = _request_head(spec, f"{host}:{port}", path, body, key)
            started = time.perf_counter()
            try:
                status, content = await conn.request(head, body)
                ok = status in spec.expect_status
                detail = f"{status} {content[:200].decode(errors='replace')}"
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            phase.latencies.append((time.perf_counter() - started) * 1000)
            if not ok:
                phase.errors += 1
                if len(phase.samples) < 5:
                    phase.samples.append(detail)

    async def run_phase(seconds: float) -> tuple[_Phase, float, float]:
        phase = _Phase(time.perf_counter() + seconds)
        cpu0, t0, server0 = time.process_time(), time.perf_counter(), server_cpu()
        await asyncio.gather(*(one_connection(conn, phase) for conn in connections))
        phase.server_cpu_s = server_cpu() - server0
        return phase, time.perf_counter() - t0, time.process_time() - cpu0

    try:
        # Errors while warming up still count below: they are real failures, just not timed.
        warm = (await run_phase(spec.warmup_s))[0] if spec.warmup_s > 0 else _Phase(0.0)
        phase, elapsed, cpu = await run_phase(spec.duration_s)
    finally:
        for conn in connections:
            await conn.close()
    return LoadResult(
        requests=len(phase.latencies),
        errors=phase.errors + warm.errors,
        elapsed_s=elapsed,
        latencies_ms=phase.latencies,
        client_cpu_s=cpu,
        server_cpu_s=phase.server_cpu_s,
        error_samples=warm.samples + phase.samples,
    )


def run_load(spec: LoadSpec) -> LoadResult:
    """Run one load spec in this process (uvloop when available, like the servers)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_drive(spec))
    return uvloop.run(_drive(spec))


def run_load_in_subprocess(spec: LoadSpec) -> LoadResult:
    """Run one load spec in a fresh process, so the client never shares a GIL with a server."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(run_load, spec).result()


def unique_prefix(label: str) -> str:
    """An idempotency-key prefix no earlier run used."""
    return f"bench-{label}-{uuid.uuid4().hex[:8]}"


@contextmanager
def py_spy_recording(pid: int, output: Path, seconds: float) -> Iterator[None]:
    """Sample the GIL-holding thread of a process with py-spy (collapsed stacks) while the body runs."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        raise SystemExit("--profile needs py-spy: pip install py-spy (into the venv)")
    output.parent.mkdir(parents=True, exist_ok=True)
    recorder = subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            "250",
            "--gil",
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield
    finally:
        try:
            _, err = recorder.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            recorder.send_signal(signal.SIGINT)
            _, err = recorder.communicate(timeout=10)
        if recorder.returncode != 0 and not output.exists():
            print(f"py-spy failed: {err.decode(errors='replace')[-500:]}", file=sys.stderr)


def top_frames(collapsed: Path, top: int = 25) -> list[tuple[str, float, float]]:
    """(function, inclusive %, self %) of the hottest functions in a py-spy collapsed-stack file.

    Record with ``--gil`` so that each sample is the thread holding the GIL: the
    percentages then say where the server's one interpreter spent its time.
    """
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_frame_name(f) for f in stack.split(";")[1:]]  # the first entry names the thread
        if not frames:
            continue
        count = int(count_text)
        total += count
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    if total == 0:
        return []
    ranked = sorted(inclusive.items(), key=lambda item: item[1], reverse=True)[:top]
    return [(name, 100 * n / total, 100 * own.get(name, 0) / total) for name, n in ranked]


def _frame_name(frame: str) -> str:
    # "handler (nexa_gateway/routes/submit.py:33)" -> "handler (nexa_gateway/routes/submit.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "api-gateway/", "sdk/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name
