"""The audit engine: score every row of a dataset and write a scored copy with a report.

One streaming pass over the input, in batches of about ``SCAN_BATCH_BYTES``, computes
per-row flags, exact-dup hashes and MinHash signatures (kept in memory: 16 bytes plus
``4 * num_perm`` bytes per row) and samples rows for the judge. Dataset-wide steps
follow: exact duplicates, LSH near-duplicate clusters, judge calls, scores. The scored
copy is then written from the batches the scan kept; only an input larger than
``KEEP_INPUT_BYTES`` is read a second time for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nexa.contracts import AuditSpec, InputSource
from nexa.contracts.refs import artifact_ref_uri
from nexa.ids import new_id
from nexa_engines.audit import dedup, minhash
from nexa_engines.audit.columns import TextColumn, detect_text_columns, labeled_row_text, row_texts
from nexa_engines.audit.heuristics import FLAG_BITS, FLAG_NAMES, compute_flags, flag_lists
from nexa_engines.audit.judge import judge_texts
from nexa_engines.audit.reader import DatasetReader
from nexa_engines.audit.report import (
    blend_judge,
    flag_counts,
    heuristic_scores,
    histogram,
    quality_tier,
    render_html,
    render_json,
    render_markdown,
    tier_rules_text,
)
from nexa_engines.engine import EngineContext, EngineError
from nexa_engines.host_resources import release_unused_memory
from nexa_store.datasets import DatasetRefError, fetch_dataset

SCORED_FILE = "scored.parquet"  # the SPEC's name (§8.1)
OUTPUT_COLUMNS = ("nexa_score", "nexa_flags", "nexa_cluster", "nexa_judge_score")
EXAMPLES_PER_FLAG = 3
SNIPPET_CHARS = 120
_HEURISTIC_FLAGS = ("empty", "too_short", "too_long", "repetitive", "non_text", "pii")
# Large batches keep the per-batch Python and pyarrow overhead small next to the
# kernels' work, and give rayon enough rows to keep every core busy.
SCAN_BATCH_BYTES = 32 << 20
SCAN_BATCH_ROWS = 131_072
# The scan keeps the input's batches (Arrow buffers: the dataset about as large as it
# is decoded) for writing the scored copy while they fit in this many bytes.
KEEP_INPUT_BYTES = 128 << 20
# How much input the scan works through between handing freed memory back to the OS.
RELEASE_EVERY_BYTES = 128 << 20
# A column whose dictionary outgrows this is written plain: free text gives up after a
# few KiB of hashing instead of the default 1 MiB, while labels and ids stay encoded.
DICTIONARY_PAGE_BYTES = 64 << 10


@dataclass
class _Scan:
    """What the first pass keeps per row, in per-batch pieces."""

    flags: list[np.ndarray] = field(default_factory=list)
    hashes: list[np.ndarray] = field(default_factory=list)
    signatures: list[np.ndarray] = field(default_factory=list)
    has_words: list[np.ndarray] = field(default_factory=list)
    pii_kinds: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rows: int = 0
    # judge reservoir: the rows with the smallest random priorities
    sample_priority: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sample_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    sample_texts: list[str] = field(default_factory=list)
    # the input's batches for the scored copy; None once they outgrow KEEP_INPUT_BYTES
    kept: list[pa.RecordBatch] | None = field(default_factory=list)
    kept_bytes: int = 0
    since_release: int = 0

    def keep(self, batch: pa.RecordBatch) -> None:
        if self.kept is None:
            return
        self.kept_bytes += batch.nbytes
        if self.kept_bytes > KEEP_INPUT_BYTES:
            self.kept = None
        else:
            self.kept.append(batch)


def _drain(pieces: list[np.ndarray], shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """One array of the per-batch pieces, freeing each piece once copied.

    ``np.concatenate`` would hold the pieces and the whole at once: for signatures,
    twice ``4 x num_perm`` bytes per row at the audit's peak.
    """
    out: np.ndarray = np.empty(shape, dtype=dtype)
    at = 0
    pieces.reverse()
    while pieces:
        piece = pieces.pop()
        out[at : at + len(piece)] = piece
        at += len(piece)
    if at != shape[0]:
        raise AssertionError(f"scan kept {at} rows of {shape[0]}")
    return out


def _snippet(text: str) -> str:
    short = text[:SNIPPET_CHARS]
    return repr(short)[1:-1] + ("…" if len(text) > SNIPPET_CHARS else "")


def _collect_examples(scan: _Scan, flags: np.ndarray, texts: pa.Array, pii: dict[str, np.ndarray]) -> None:
    for name in _HEURISTIC_FLAGS:
        have = scan.examples.setdefault(name, [])
        if len(have) >= EXAMPLES_PER_FLAG:
            continue
        for i in np.flatnonzero(flags & FLAG_BITS[name])[: EXAMPLES_PER_FLAG - len(have)]:
            if name == "pii":
                # Never copy personal data into the report: name the kinds only.
                detail = "contains " + ", ".join(k for k, m in pii.items() if m[i])
            else:
                detail = _snippet(texts[int(i)].as_py() or "")
            have.append({"row": scan.rows + int(i), "detail": detail})


def _sample_for_judge(
    scan: _Scan, batch: pa.RecordBatch, columns: list[TextColumn], rng: np.random.Generator, k: int
) -> None:
    priority = rng.random(batch.num_rows)
    merged = np.concatenate([scan.sample_priority, priority])
    keep = np.sort(np.argsort(merged, kind="stable")[:k])
    old = len(scan.sample_priority)
    kept_old = keep[keep < old]
    kept_new = keep[keep >= old] - old
    scan.sample_texts = [scan.sample_texts[i] for i in kept_old] + [
        labeled_row_text(batch, columns, int(i)) for i in kept_new
    ]
    scan.sample_rows = np.concatenate([scan.sample_rows[kept_old], scan.rows + kept_new])
    scan.sample_priority = merged[keep]


def _scan(ctx: EngineContext, spec: AuditSpec, reader: DatasetReader, columns: list[TextColumn]) -> _Scan:
    scan = _Scan()
    a, b = minhash.permutations(spec.num_perm, spec.seed)
    rng = np.random.Generator(np.random.PCG64(spec.seed))
    total = reader.num_rows()
    for batch in reader.iter_batches():
        ctx.check_cancelled()
        text = row_texts(batch, columns)
        texts = text.joined
        result = compute_flags(
            texts,
            min_chars=spec.min_chars,
            max_chars=spec.max_chars,
            empty_field=text.empty_field,
            fields=text.fields if len(text.fields) > 1 else None,
        )
        sig, hashes, word_counts = dedup.fingerprints(texts, spec.ngram, a, b)
        # The low 16 bits of each value: LSH and the Jaccard estimate lose nothing that matters
        # (a false match has odds 2**-16 per entry), and a million rows take 256 MB, not 512.
        scan.signatures.append(sig.astype(np.uint16))
        scan.hashes.append(hashes)
        scan.has_words.append(word_counts > 0)
        scan.flags.append(result.flags)
        for kind, mask in result.pii_kinds.items():
            scan.pii_kinds[kind] = scan.pii_kinds.get(kind, 0) + int(mask.sum())
        _collect_examples(scan, result.flags, texts, result.pii_kinds)
        if spec.judge is not None:
            _sample_for_judge(scan, batch, columns, rng, spec.judge.sample_size)
        scan.keep(batch)
        scan.rows += batch.num_rows
        scan.since_release += batch.nbytes
        if scan.since_release >= RELEASE_EVERY_BYTES:
            # The allocators keep the pages of each batch's scratch for reuse; over a long scan
            # that is hundreds of MB on top of what the scan keeps. Hand them back now and then.
            release_unused_memory()
            scan.since_release = 0
        done = scan.rows / total if total else 1.0 - 1.0 / (1.0 + scan.rows / 50_000)
        ctx.progress(0.02 + 0.58 * done, f"scanned {scan.rows} rows")
    return scan


def _run_judge(ctx: EngineContext, spec: AuditSpec, scan: _Scan, n: int) -> tuple[np.ndarray, dict[str, Any]]:
    judge_scores = np.full(n, np.nan)
    assert spec.judge is not None
    count = len(scan.sample_texts)
    ctx.log(f"judge: scoring {count} sampled rows with {spec.judge.model} at {spec.judge.base_url}")

    def on_done(done: int) -> None:
        if done % max(1, count // 20) == 0 or done == count:
            ctx.progress(0.7 + 0.15 * done / max(1, count), f"judged {done}/{count} rows")

    outcome = judge_texts(spec.judge, scan.sample_texts, check_cancelled=ctx.check_cancelled, on_done=on_done)
    got = np.array([np.nan if s is None else s for s in outcome.scores], dtype=np.float64)
    judge_scores[scan.sample_rows] = got
    scored = int(np.count_nonzero(~np.isnan(got)))
    if count and scored == 0:
        raise EngineError(
            "judge_failed",
            f"the judge returned no usable score for any of {count} rows ({outcome.requests} requests); "
            "check base_url and model",
            retryable=True,
        )
    ctx.log(
        f"judge: {scored} of {count} rows scored, {outcome.failures} without a score, {outcome.requests} requests"
    )
    info = {
        "model": spec.judge.model,
        "sampled": count,
        "scored": scored,
        "failures": outcome.failures,
        "requests": outcome.requests,
        "mean_score": float(np.nanmean(got)) if scored else None,
    }
    return judge_scores, info


def _output_schema(schema: pa.Schema, judged: bool) -> tuple[pa.Schema, list[str]]:
    kept = [f.name for f in schema if f.name not in OUTPUT_COLUMNS]
    out = pa.schema([schema.field(name) for name in kept], metadata=schema.metadata)
    out = out.append(pa.field("nexa_score", pa.float64()))
    out = out.append(pa.field("nexa_flags", pa.list_(pa.string())))
    out = out.append(pa.field("nexa_cluster", pa.int64()))
    if judged:
        out = out.append(pa.field("nexa_judge_score", pa.float64()))
    return out, kept


def _write_scored(
    ctx: EngineContext,
    batches: Iterable[pa.RecordBatch],
    input_schema: pa.Schema,
    path: Path,
    scores: np.ndarray,
    flags: np.ndarray,
    clusters: np.ndarray,
    judge_scores: np.ndarray | None,
) -> None:
    schema, kept = _output_schema(input_schema, judge_scores is not None)
    n = len(scores)
    start = 0
    with pq.ParquetWriter(
        path, schema, compression="zstd", dictionary_pagesize_limit=DICTIONARY_PAGE_BYTES
    ) as writer:
        for batch in batches:
            ctx.check_cancelled()
            end = start + batch.num_rows
            if end > n:
                raise EngineError(
                    "dataset_changed", "the dataset grew while it was being audited; run the audit again"
                )
            arrays = [batch.column(name) for name in kept]
            arrays += [
                pa.array(scores[start:end]),
                flag_lists(flags[start:end]),
                pa.array(clusters[start:end]),
            ]
            if judge_scores is not None:
                arrays.append(pa.array(judge_scores[start:end], from_pandas=True))
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            start = end
            ctx.progress(0.85 + 0.13 * start / max(1, n), f"wrote {start}/{n} rows")
    if start != n:
        raise EngineError(
            "dataset_changed", "the dataset shrank while it was being audited; run the audit again"
        )


def run(ctx: EngineContext, spec: AuditSpec) -> dict[str, Any]:
    """Audit ``spec.dataset_uri``; commit a scored dataset artifact with reports; return the summary."""
    if not isinstance(spec, AuditSpec):
        spec = AuditSpec.model_validate(spec)
    ctx.progress(0.0, "resolving dataset")
    try:
        resolved = fetch_dataset(spec.dataset_uri, store=ctx.store, access=ctx.access, workdir=ctx.workdir)
    except DatasetRefError as exc:
        raise EngineError(exc.code, exc.message) from exc
    reader = DatasetReader(
        resolved.path, resolved.format, batch_size=SCAN_BATCH_ROWS, batch_bytes=SCAN_BATCH_BYTES
    )
    columns = detect_text_columns(reader.schema(), spec.text_columns)
    ctx.log(
        f"auditing {resolved.uri} ({resolved.format}); text columns: "
        + ", ".join(f"{c.name}{'' if c.required else ' (optional)'}" for c in columns)
    )

    scan = _scan(ctx, spec, reader, columns)
    n = scan.rows
    ctx.usage("rows", n)
    ctx.log(f"scanned {n} rows")
    flags = _drain(scan.flags, (n,), np.uint16)
    has_words = _drain(scan.has_words, (n,), np.bool_)
    hashes = _drain(scan.hashes, (n, 2), np.uint64)
    first = dedup.first_occurrence(hashes, has_words)
    del hashes
    exact = first != np.arange(n)
    flags[exact] |= FLAG_BITS["exact_duplicate"]
    ctx.log(f"exact duplicates: {int(exact.sum())}")
    ctx.progress(0.62, "finding near duplicates")

    cut, bands, band_rows = minhash.lsh_parameters(spec.near_dup_threshold, spec.num_perm)
    sig = _drain(scan.signatures, (n, spec.num_perm), np.uint16)
    clusters, verified_pairs = dedup.near_duplicate_clusters(sig, has_words, cut, bands, band_rows)
    del sig
    ctx.check_cancelled()
    near = (clusters != np.arange(n)) & ~exact
    flags[near] |= FLAG_BITS["near_duplicate"]
    # The clusters those rows belong to: a group of exact copies alone is no near-duplicate cluster,
    # so "N rows in M clusters" always reads right (M is 0 exactly when N is).
    num_clusters = int(np.unique(clusters[near]).size)
    ctx.log(
        f"near duplicates: {int(near.sum())} rows in {num_clusters} clusters "
        f"(LSH {bands} bands x {band_rows} rows, {verified_pairs} verified pairs)"
    )
    for i in np.flatnonzero(exact)[:EXAMPLES_PER_FLAG]:
        scan.examples.setdefault("exact_duplicate", []).append(
            {"row": int(i), "detail": f"same text as row {int(first[i])}"}
        )
    for i in np.flatnonzero(near)[:EXAMPLES_PER_FLAG]:
        scan.examples.setdefault("near_duplicate", []).append(
            {"row": int(i), "detail": f"near copy in the cluster of row {int(clusters[i])}"}
        )
    ctx.progress(0.7, "scoring")

    scores = heuristic_scores(flags)
    judge_scores: np.ndarray | None = None
    judge_info: dict[str, Any] | None = None
    if spec.judge is not None and n:
        judge_scores, judge_info = _run_judge(ctx, spec, scan, n)
        scores = blend_judge(scores, judge_scores)

    counts = flag_counts(flags)
    flagged = int(np.count_nonzero(flags))
    mean_score = float(scores.mean()) if n else 0.0
    tier = quality_tier(mean_score, flagged / n if n else 0.0) if n else "D"
    dataset_id = new_id("ds")
    summary: dict[str, Any] = {
        "dataset_uri": resolved.uri,
        "input_sha256": resolved.sha256,
        "num_rows": n,
        "text_columns": [c.name for c in columns],
        "mean_score": round(mean_score, 6),
        "median_score": float(np.median(scores)) if n else 0.0,
        "quality_tier": tier,
        "flagged_rows": flagged,
        "flagged_fraction": flagged / n if n else 0.0,
        "flag_counts": counts,
        "pii_kinds": {k: v for k, v in scan.pii_kinds.items() if v},
        "exact_duplicates": int(exact.sum()),
        "near_duplicates": int(near.sum()),
        "near_duplicate_clusters": num_clusters,
        "lsh": {
            "bands": bands,
            "rows_per_band": band_rows,
            "threshold": spec.near_dup_threshold,
            "verify_cut": round(cut, 4),
        },
        "judge": judge_info,
        "score_histogram": histogram(scores),
        "tier_rules": tier_rules_text(),
        "examples": {name: scan.examples[name] for name in FLAG_NAMES if scan.examples.get(name)},
    }

    writer = ctx.store.begin("dataset", dataset_id)
    try:
        batches = scan.kept if scan.kept is not None else reader.iter_batches()
        _write_scored(
            ctx, batches, reader.schema(), writer.path / SCORED_FILE, scores, flags, clusters, judge_scores
        )
        (writer.path / "report.json").write_text(render_json(summary), encoding="utf-8")
        (writer.path / "report.md").write_text(render_markdown(summary), encoding="utf-8")
        (writer.path / "report.html").write_text(render_html(summary), encoding="utf-8")
        ctx.check_cancelled()
        metrics = {
            k: summary[k]
            for k in (
                "num_rows",
                "mean_score",
                "quality_tier",
                "flag_counts",
                "exact_duplicates",
                "near_duplicates",
                "near_duplicate_clusters",
            )
        }
        if judge_info is not None:
            metrics["judge"] = judge_info
        writer.commit(
            job_id=ctx.job_id,
            attempt=ctx.attempt,
            tenant_id=ctx.tenant_id,
            pipeline_id=ctx.pipeline_id,
            inputs=[InputSource(uri=resolved.uri, sha256=resolved.sha256, artifact_id=resolved.artifact_id)],
            config=spec.model_dump(mode="json"),
            metrics=metrics,
        )
    except BaseException:
        writer.abort()
        raise
    ctx.produced_artifacts.append(dataset_id)
    uri = artifact_ref_uri(dataset_id)  # never a server path: users download through the API
    ctx.log(f"wrote {dataset_id}: tier {tier}, mean score {mean_score:.3f}, {flagged} of {n} rows flagged")
    ctx.progress(1.0, f"audit complete: tier {tier}")
    return {
        "dataset_id": dataset_id,
        # The SPEC's names (§8.1): the 0-5 mean score, the graded tier and the metrics.
        "overall_quality_score": round(mean_score, 4),
        "metrics": {
            "num_rows": n,
            "flagged_rows": flagged,
            "flagged_fraction": round(flagged / n, 6) if n else 0.0,
            "median_score": summary["median_score"],
            "flag_counts": counts,
            "exact_duplicates": int(exact.sum()),
            "near_duplicates": int(near.sum()),
            "near_duplicate_clusters": num_clusters,
        },
        "scored_dataset_uri": f"{uri}/{SCORED_FILE}",
        "report_uri": f"{uri}/report.html",
        "report_json_uri": f"{uri}/report.json",
        "num_rows": n,
        "mean_score": round(mean_score, 6),
        "quality_tier": tier,
        "flag_counts": counts,
        "exact_duplicates": int(exact.sum()),
        "near_duplicates": int(near.sum()),
        "near_duplicate_clusters": num_clusters,
        **({"judge_mean_score": judge_info["mean_score"]} if judge_info else {}),
    }
