"""MinHash signatures side by side: nexa_kernels vs rensa vs datasketch, each in its own process.

128 permutations over word 5-gram shingles of ``instruction + "\\n" + response`` of a
generated SFT parquet. Reports rows/s, rows/s per thread, rows per CPU-second (the
process's user + system time over the timed section, all threads) and peak RSS per
contender. On a shared machine a contender gets whatever share of a core the others
leave it, so wall-clock ratios drift with the load while CPU-second ratios do not; both
are printed. ``--repeat`` runs each contender that many times and keeps its fastest run.

    .venv/bin/python bench/bench_minhash.py --rows 1000000 [--datasketch-rows 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NUM_PERM, NGRAM, SEED = 128, 5, 42
DATA_DIR = Path("/tmp/nexa-bench")


def dataset(rows: int) -> Path:
    """A generated SFT parquet of ``rows`` rows under /tmp (made once)."""
    path = DATA_DIR / f"sft-{rows}.parquet"
    if not path.exists():
        from nexa_engines.sample_data import generate_sft_dataset

        generate_sft_dataset(path, num_rows=rows, seed=1)
    return path


def load_texts(path: Path, limit: int) -> Any:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["instruction", "response"]).slice(0, limit)
    return pc.binary_join_element_wise(table["instruction"], table["response"], "\n")


def shingle_lists(texts: list[str]) -> list[list[str]]:
    out = []
    for text in texts:
        words = text.split()
        out.append(
            [" ".join(words[i : i + NGRAM]) for i in range(max(1, len(words) - NGRAM + 1))] if words else []
        )
    return out


def run_contender(name: str, path: Path, rows: int) -> dict[str, object]:
    """Time one contender in this process; the text column is loaded before the clock starts."""
    texts = load_texts(path, rows)
    n = len(texts)
    extra: dict[str, object] = {}
    if name == "nexa":
        from nexa_engines import kernels
        from nexa_engines.audit import minhash

        a, b = minhash.permutations(NUM_PERM, SEED)
        cpu, start = time.process_time(), time.perf_counter()
        sig, _ = kernels.minhash_signatures(texts, NGRAM, a, b)
        elapsed = time.perf_counter() - start
        extra["threads"] = kernels._native.num_threads() if kernels._native else 1
    elif name in ("rensa", "rensa-compute-only"):
        from rensa import RMinHash

        pylist = texts.to_pylist()
        cpu, start = time.process_time(), time.perf_counter()
        tokens = shingle_lists(pylist)
        tokenized = time.perf_counter()
        extra["tokenize_s"] = round(tokenized - start, 3)
        if name == "rensa-compute-only":
            cpu, start = time.process_time(), tokenized
        matrix = RMinHash.digest_matrix_from_token_sets(tokens, NUM_PERM, SEED)
        elapsed = time.perf_counter() - start
        extra["rows_out"] = matrix.len()
    elif name == "datasketch":
        from datasketch import MinHash

        pylist = texts.to_pylist()
        cpu, start = time.process_time(), time.perf_counter()
        encoded = [[s.encode("utf-8") for s in doc] for doc in shingle_lists(pylist)]
        sigs = MinHash.bulk(encoded, num_perm=NUM_PERM, seed=SEED)
        elapsed = time.perf_counter() - start
        extra["rows_out"] = len(sigs)
    else:
        raise SystemExit(f"unknown contender {name}")
    cpu_s = time.process_time() - cpu
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    threads = int(str(extra.get("threads", 1)))
    return {
        "contender": name,
        "rows": n,
        "seconds": round(elapsed, 3),
        "cpu_s": round(cpu_s, 3),
        "rows_per_s": round(n / elapsed),
        "rows_per_s_per_core": round(n / elapsed / threads),
        "rows_per_cpu_s": round(n / max(cpu_s, 1e-9)),
        "peak_rss_mib": round(peak_mib),
        "load_avg": round(os.getloadavg()[0], 2),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--datasketch-rows", type=int, default=20_000, help="datasketch is timed on a prefix")
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender; the fastest is kept")
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = dataset(args.rows)
    if args.contender:
        print(json.dumps(run_contender(args.contender, path, args.limit or args.rows)))
        return
    plan = [
        ("nexa", args.rows, {"RAYON_NUM_THREADS": "1"}),
        ("nexa", args.rows, {}),
        ("rensa", args.rows, {}),
        ("rensa-compute-only", args.rows, {}),
        ("datasketch", args.datasketch_rows, {}),
    ]
    results = []
    for name, rows, env in plan:
        cmd = [sys.executable, __file__, "--rows", str(args.rows), "--contender", name, "--limit", str(rows)]
        runs = []
        for _ in range(max(1, args.repeat)):
            out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        result = min(runs, key=lambda r: float(r["seconds"]))
        results.append(result)
        print(json.dumps(result), flush=True)
    base = {r["contender"]: r for r in results if r["contender"] != "nexa" or r.get("threads") == 1}
    for other in ("rensa", "rensa-compute-only", "datasketch"):
        wall = base["nexa"]["rows_per_s_per_core"] / base[other]["rows_per_s_per_core"]
        cpu = base["nexa"]["rows_per_cpu_s"] / base[other]["rows_per_cpu_s"]
        print(f"nexa (1 thread) / {other}: {wall:.2f}x per core (wall), {cpu:.2f}x per CPU-second")


if __name__ == "__main__":
    main()
