"""Audit end to end: the Nexa audit engine vs an equivalent datatrove pipeline, and the I/O floor.

Every contender reads the same parquet (``id``, ``text``) and runs in its own process;
its clock starts after its modules are imported (reported as ``imports_s``). Besides the
wall-clock ``seconds`` it reports ``cpu_s`` (user + system time of the process and its
children over the timed section, all threads), which the other jobs on a shared machine
inflate far less than wall time; ``--repeat`` keeps each contender's fastest of N runs:

- ``floor``: pyarrow read plus xxh3-64 over the text column (no analysis at all);
- ``nexa``: the audit engine (heuristics, exact + near dup, scored.parquet) on the Rust kernels;
- ``nexa-python``: the same engine with ``NEXA_KERNELS=python`` (numpy/pyarrow path);
- ``datatrove``: Gopher quality + C4 filters, then its four MinHash stages (5-grams,
  16 buckets x 8 hashes = 128 permutations), writing the kept rows as parquet.

    .venv/bin/python bench/bench_audit_e2e.py --rows 100000
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

DATA_DIR = Path("/tmp/nexa-bench")


def text_parquet(rows: int) -> Path:
    """``id`` + ``text`` (instruction and response joined) of a generated SFT dataset, made once."""
    path = DATA_DIR / f"text-{rows}.parquet"
    if path.exists():
        return path
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from nexa_engines.sample_data import generate_sft_dataset

    src = DATA_DIR / f"sft-{rows}.parquet"
    if not src.exists():
        generate_sft_dataset(src, num_rows=rows, seed=1)
    table = pq.read_table(src)
    text = pc.binary_join_element_wise(table["instruction"], table["response"], "\n")
    pq.write_table(pa.table({"id": table["id"].cast(pa.string()), "text": text}), path)
    return path


def run_floor(path: Path, work: Path) -> None:
    import pyarrow.parquet as pq
    import xxhash

    texts = pq.read_table(path, columns=["text"])["text"]
    h = xxhash.xxh3_64()
    for chunk in texts.chunks:
        for buf in chunk.buffers()[1:]:
            if buf is not None:
                h.update(memoryview(buf))
    h.intdigest()


class _Quiet:
    def progress(self, fraction: float, message: str | None = None) -> None:
        pass

    def log(self, line: str) -> None:
        pass

    def usage(self, kind: str, amount: float) -> None:
        pass


def run_nexa(path: Path, work: Path) -> dict[str, object]:
    from nexa.contracts import AuditSpec
    from nexa_engines import kernels
    from nexa_engines.audit.engine import run
    from nexa_engines.engine import EngineContext
    from nexa_store.local import LocalArtifactStore

    ctx = EngineContext(
        job_id="job_" + "a" * 26,
        attempt=1,
        tenant_id="tnt_" + "b" * 26,
        store=LocalArtifactStore(work / "store"),
        reporter=_Quiet(),
        workdir=work / "work",
        allowed_roots=[path.parent],
    )
    result = run(ctx, AuditSpec(dataset_uri=str(path), text_columns=["text"]))
    return {
        "backend": kernels.backend(),
        "near_duplicates": result["near_duplicates"],
        "exact_duplicates": result["exact_duplicates"],
    }


def _patch_datatrove_xxhash() -> None:
    """datatrove 0.10 passes ``str`` to xxhash, which xxhash >= 4 refuses: encode it as UTF-8 first."""
    import xxhash
    from datatrove.utils.hashes import xxhash as dt_xxhash

    def encoded(data: str | bytes) -> bytes:
        return data.encode("utf-8") if isinstance(data, str) else data

    dt_xxhash.xxhash32 = lambda data: xxhash.xxh32_intdigest(encoded(data))
    dt_xxhash.xxhash64 = lambda data: xxhash.xxh64_intdigest(encoded(data))


def run_datatrove(path: Path, work: Path) -> dict[str, object]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    _patch_datatrove_xxhash()
    config = MinhashConfig(n_grams=5, num_buckets=16, hashes_per_bucket=8, seed=1)
    logs = str(work / "logs")

    def execute(name: str, pipeline: list[object], tasks: int = 1) -> None:
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=f"{logs}/{name}").run()

    src = ParquetReader(str(path.parent), glob_pattern=path.name, text_key="text", id_key="id")
    execute(
        "filter-signatures",
        [
            src,
            GopherQualityFilter(),
            C4QualityFilter(filter_no_terminal_punct=False),
            ParquetWriter(str(work / "filtered")),
            MinhashDedupSignature(output_folder=str(work / "sigs"), config=config),
        ],
    )
    execute(
        "buckets",
        [
            MinhashDedupBuckets(
                input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=config
            )
        ],
        tasks=config.num_buckets,
    )
    execute(
        "cluster",
        [
            MinhashDedupCluster(
                input_folder=str(work / "buckets"), output_folder=str(work / "remove"), config=config
            )
        ],
    )
    execute(
        "filter",
        [
            ParquetReader(str(work / "filtered"), text_key="text", id_key="id"),
            MinhashDedupFilter(input_folder=str(work / "remove")),
            ParquetWriter(str(work / "kept")),
        ],
    )
    return {}


# Modules each contender imports before its clock starts: a worker process has them
# loaded already, so import time (about 1 s for pydantic/numpy/datatrove) is not the job's.
IMPORTS = {
    "floor": ["pyarrow.parquet", "xxhash"],
    "nexa": [
        "nexa.contracts",
        "nexa_engines.audit.engine",
        "nexa_engines.engine",
        "nexa_store.local",
    ],
    "datatrove": [
        "datatrove.executor",
        "datatrove.pipeline.dedup",
        "datatrove.pipeline.filters",
        "datatrove.pipeline.readers",
        "datatrove.pipeline.writers",
        "datatrove.utils.hashes.xxhash",
    ],
}
IMPORTS["nexa-python"] = IMPORTS["nexa"]

CONTENDERS = {"floor": run_floor, "nexa": run_nexa, "nexa-python": run_nexa, "datatrove": run_datatrove}


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--only", nargs="*", default=list(CONTENDERS), choices=list(CONTENDERS))
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender; the fastest is kept")
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = text_parquet(args.rows)
    if args.contender:
        work = DATA_DIR / f"work-{args.contender}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        before = time.perf_counter()
        for module in IMPORTS[args.contender]:
            importlib.import_module(module)
        imports = time.perf_counter() - before
        cpu, start = _cpu_seconds(), time.perf_counter()
        extra = CONTENDERS[args.contender](path, work) or {}
        elapsed = time.perf_counter() - start
        cpu_s = _cpu_seconds() - cpu
        peak = max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        print(
            json.dumps(
                {
                    "contender": args.contender,
                    "rows": args.rows,
                    "seconds": round(elapsed, 3),
                    "cpu_s": round(cpu_s, 3),
                    "rows_per_s": round(args.rows / elapsed),
                    "peak_rss_mib": round(peak / 1024),
                    "imports_s": round(imports, 3),
                    "load_avg": round(os.getloadavg()[0], 2),
                    **extra,
                }
            )
        )
        return
    results = {}
    for name in args.only:
        env = {**os.environ, "NEXA_KERNELS": "python" if name == "nexa-python" else "auto"}
        cmd = [sys.executable, __file__, "--rows", str(args.rows), "--contender", name]
        runs = []
        for _ in range(max(1, args.repeat)):
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{name}: failed\n{out.stderr[-3000:]}", file=sys.stderr)
                break
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if not runs:
            continue
        results[name] = min(runs, key=lambda r: float(r["seconds"]))
        print(json.dumps(results[name]), flush=True)
    if "nexa" in results:
        ours = results["nexa"]["seconds"]
        for other in ("nexa-python", "datatrove"):
            if other in results:
                print(f"nexa vs {other}: {results[other]['seconds'] / ours:.2f}x faster")
        if "floor" in results:
            floor = results["floor"]
            print(
                f"nexa as a fraction of the floor: {floor['seconds'] / ours:.1%} (wall), "
                f"{floor['cpu_s'] / max(results['nexa']['cpu_s'], 1e-9):.1%} (CPU-seconds)"
            )


if __name__ == "__main__":
    main()
