"""Peak memory of one audit: a million rows of about 400 bytes at 128 permutations (goal: at most 1 GiB).

Each run is a fresh process (``--child``) so its ``VmHWM`` (peak resident set,
from /proc) is the audit's alone, Python and the libraries included. The input
is the SFT text dataset of ``bench_audit_e2e`` with a fixed sentence appended to
every row, so rows average about 400 decoded bytes.

    .venv/bin/python bench/bench_audit_memory.py [--rows 1000000] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_audit_e2e import DATA_DIR, run_nexa, text_parquet  # noqa: E402
from bench.common import machine_summary, markdown_table, print_machine  # noqa: E402

PAD = " Further notes: each answer restates the question briefly and closes with a short summary line."


def dataset(rows: int) -> Path:
    """The ~400-byte-row input, made once."""
    path = DATA_DIR / f"text400-{rows}.parquet"
    if path.exists():
        return path
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(text_parquet(rows))
    text = pc.binary_join_element_wise(table["text"], pa.array([PAD] * len(table)), "")
    pq.write_table(pa.table({"id": table["id"], "text": text}), path)
    return path


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def child(path: Path) -> None:
    import pyarrow.parquet as pq

    before = _status_mib("VmHWM")
    started, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_nexa(path, Path(tmp))
    meta = pq.ParquetFile(path).metadata
    decoded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    print(
        json.dumps(
            {
                "peak_mib": _status_mib("VmHWM"),
                "start_mib": before,
                "wall_s": time.perf_counter() - started,
                "cpu_s": time.process_time() - cpu,
                "rows": meta.num_rows,
                "bytes_per_row": decoded / meta.num_rows,
                **result,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100,000 rows, one run")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.quick:
        args.rows, args.repeat = 100_000, 1
    summary = machine_summary()
    print_machine(summary)
    path = dataset(args.rows)
    runs = []
    for _ in range(args.repeat):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(path)], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"run: peak {runs[-1]['peak_mib']:.0f} MiB, {runs[-1]['wall_s']:.1f} s")
    first = runs[0]
    print()
    print(
        markdown_table(
            ["rows", "bytes/row", "peak MiB (min / median)", "wall s (min / median)", "CPU s (min / median)"],
            [
                [
                    first["rows"],
                    f"{first['bytes_per_row']:.0f}",
                    f"{min(r['peak_mib'] for r in runs):.0f} / {statistics.median(r['peak_mib'] for r in runs):.0f}",
                    f"{min(r['wall_s'] for r in runs):.1f} / {statistics.median(r['wall_s'] for r in runs):.1f}",
                    f"{min(r['cpu_s'] for r in runs):.1f} / {statistics.median(r['cpu_s'] for r in runs):.1f}",
                ]
            ],
        )
    )
    worst = max(r["peak_mib"] for r in runs)
    print(f"\nworst peak {worst:.0f} MiB per {first['rows']} rows (goal for 1M rows: at most 1024 MiB)")


if __name__ == "__main__":
    main()
