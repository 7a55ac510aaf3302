"""Sequence packing: padding waste and efficiency of first-fit decreasing, and its speed.

Distributions: the token lengths of the demo SFT data (whitespace words x 1.3, a
tokenizer-free stand-in) and a long-tailed lognormal; bins of 2048 tokens. Compares
no packing (one sequence per bin), the Rust FFD and the pure-Python reference FFD.

    .venv/bin/python bench/bench_packing.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from nexa_engines import kernels
from nexa_engines import kernels_reference as ref

CAPACITY = 2048


def demo_lengths(rows: int) -> np.ndarray:
    """Approximate token counts of the demo SFT rows (instruction + response)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from nexa_engines.sample_data import generate_sft_dataset

    path = Path(f"/tmp/nexa-bench/sft-{rows}.parquet")
    if not path.exists():
        generate_sft_dataset(path, num_rows=rows, seed=1)
    table = pq.read_table(path, columns=["instruction", "response"])
    text = pc.binary_join_element_wise(table["instruction"], table["response"], "\n")
    words = kernels.text_stats(text)["words"]
    return np.clip(np.ceil(words * 1.3).astype(np.int64) + 8, 1, CAPACITY)


def long_tail(rows: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(rng.lognormal(5.5, 1.2, rows).astype(np.int64) + 1, 1, CAPACITY)


def report(name: str, lengths: np.ndarray, reference_rows: int) -> dict[str, object]:
    start = time.perf_counter()
    packing = kernels.pack_sequences(lengths, CAPACITY)
    pack_s = time.perf_counter() - start
    start = time.perf_counter()
    ref.first_fit_decreasing(lengths[:reference_rows].tolist(), CAPACITY)
    ref_s = time.perf_counter() - start
    lower_bound = int(np.ceil(lengths.sum() / CAPACITY))
    return {
        "distribution": name,
        "sequences": len(lengths),
        "mean_len": round(float(lengths.mean()), 1),
        "p99_len": int(np.percentile(lengths, 99)),
        "bins": packing.num_bins,
        "bins_lower_bound": lower_bound,
        "efficiency": round(packing.efficiency(lengths), 5),
        "padding_waste": round(1 - packing.efficiency(lengths), 5),
        "unpacked_padding_waste": round(1 - float(lengths.mean()) / CAPACITY, 5),
        "pack_seconds": round(pack_s, 3),
        "reference_seconds": round(ref_s, 3),
        "reference_rows": reference_rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--reference-rows", type=int, default=20_000, help="the slow reference packs a prefix"
    )
    args = parser.parse_args()
    print(f"kernels backend: {kernels.backend()}")
    for name, lengths in (
        ("demo-sft", demo_lengths(args.rows)),
        ("lognormal-long-tail", long_tail(args.rows)),
    ):
        print(json.dumps(report(name, lengths, args.reference_rows)), flush=True)


if __name__ == "__main__":
    main()
