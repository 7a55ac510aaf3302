"""Audit quality on the planted-defect set: precision and recall per flag, and the near-duplicate curve.

Not a timing: the figures docs/audit.md quotes, from the generator the tests use
(``tests/fixtures/planted.py``), over several seeds of the set.

    .venv/bin/python bench/planted_quality.py [--seeds 5] [--pairs 400]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from nexa.contracts import AuditSpec  # noqa: E402
from nexa_engines.audit import run  # noqa: E402
from nexa_engines.audit.minhash import lsh_parameters  # noqa: E402
from nexa_engines.engine import EngineContext  # noqa: E402
from nexa_store.local import LocalArtifactStore  # noqa: E402
from tests.fixtures.planted import FlagScore, planted_dataset, score  # noqa: E402


class _Quiet:
    def progress(self, fraction: float, message: str | None = None) -> None: ...

    def log(self, line: str) -> None: ...

    def usage(self, kind: str, amount: float) -> None: ...


def audit_flags(texts: list[str], seed: int) -> list[list[str]]:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "data").mkdir()
        path = root / "data" / "planted.parquet"
        pq.write_table(pa.table({"text": texts}), path)
        ctx = EngineContext(
            job_id="job_" + "a" * 26,
            attempt=1,
            tenant_id="tnt_" + "b" * 26,
            store=LocalArtifactStore(root / "store"),
            reporter=_Quiet(),
            workdir=root / "work",
            allowed_roots=[root / "data"],
        )
        result = run(ctx, AuditSpec(dataset_uri=str(path), seed=seed))
        table = pq.read_table(ctx.store.artifact_dir(result["dataset_id"]) / "scored.parquet")
        flags: list[list[str]] = table.column("nexa_flags").to_pylist()
        return flags


def flag_probability(j: float, threshold: float = 0.7, num_perm: int = 128) -> float:
    """P(a pair at true Jaccard ``j`` is found): LSH candidate, then estimate >= the cut (normal approx)."""
    cut, bands, rows = lsh_parameters(threshold, num_perm)
    candidate = 1.0 - (1.0 - j**rows) ** bands
    spread = math.sqrt(max(j * (1.0 - j), 1e-12) / num_perm)
    verified = 0.5 * math.erfc((cut - j) / (spread * math.sqrt(2.0)))
    return candidate * verified


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=400)
    args = parser.parse_args()
    totals: dict[str, list[FlagScore]] = {}
    pairs: list[tuple[float, bool]] = []
    for seed in range(1, args.seeds + 1):
        planted = planted_dataset(seed=seed, pairs=args.pairs)
        flags = audit_flags(planted.texts, seed)
        for s in score(planted, flags):
            totals.setdefault(s.flag, []).append(s)
        pairs += [(j, "near_duplicate" in flags[row]) for row, j in planted.pair_jaccard.items()]
    print("| flag | positives | negatives | precision | recall |")
    print("|---|---|---|---|---|")
    for flag, runs in sorted(totals.items()):
        tp = sum(r.true_positives for r in runs)
        fp = sum(r.false_positives for r in runs)
        pos = sum(r.positives for r in runs)
        neg = sum(r.negatives for r in runs)
        print(f"| `{flag}` | {pos} | {neg} | {tp / max(1, tp + fp):.3f} | {tp / max(1, pos):.3f} |")
    print()
    cut, bands, rows = lsh_parameters(0.7, 128)
    print(f"near_dup_threshold 0.7, num_perm 128: {bands} bands x {rows} rows, verified at {cut:.3f}")
    print("| true Jaccard | found (model) | found (measured) | pairs |")
    print("|---|---|---|---|")
    for low in (0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9):
        high = {
            0.3: 0.4,
            0.4: 0.5,
            0.5: 0.55,
            0.55: 0.6,
            0.6: 0.65,
            0.65: 0.7,
            0.7: 0.75,
            0.75: 0.8,
            0.8: 0.9,
        }.get(low, 1.0)
        inside = [found for j, found in pairs if low <= j < high]
        rate = f"{sum(inside) / len(inside):.3f}" if inside else "-"
        print(f"| {low:.2f}–{high:.2f} | {flag_probability((low + high) / 2):.3f} | {rate} | {len(inside)} |")


if __name__ == "__main__":
    main()
