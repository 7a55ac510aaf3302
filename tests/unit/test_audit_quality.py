"""Audit quality on the project's planted-defect set: precision and recall per flag, near thresholds.

The set (``tests/fixtures/planted.py``) puts rows on both sides of each Gopher
filter's threshold and near-duplicate pairs across Jaccard 0.3-0.95 with their
exact word 5-gram Jaccard as the truth. docs/audit.md has the table this test
holds the audit to (``bench/planted_quality.py`` prints it).
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nexa.contracts import AuditSpec
from nexa_engines.audit import run
from tests.fixtures.planted import NOUNS, jaccard, planted_dataset, prose_words, score
from tests.unit.test_audit_engine import make_ctx


def _audit_flags(tmp_path: Path, texts: list[str]) -> list[list[str]]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    path = data / f"planted-{len(texts)}.parquet"
    pq.write_table(pa.table({"text": texts}), path)
    ctx = make_ctx(tmp_path)
    result = run(ctx, AuditSpec(dataset_uri=str(path)))
    table = pq.read_table(ctx.store.artifact_dir(result["dataset_id"]) / "scored.parquet")
    flags: list[list[str]] = table.column("nexa_flags").to_pylist()
    return flags


def test_every_flag_reaches_095_precision_and_recall_on_the_planted_set(tmp_path: Path) -> None:
    planted = planted_dataset()
    flags = _audit_flags(tmp_path, planted.texts)
    scores = {s.flag: s for s in score(planted, flags)}
    assert set(scores) == {
        "near_duplicate", "low_alpha_words", "symbol_ratio", "word_length",
        "no_stop_words", "bullet_lines", "ellipsis_lines",
    }  # fmt: skip
    for s in scores.values():
        assert s.positives >= 60 and s.negatives >= 300, s
        assert s.precision >= 0.95 and s.recall >= 0.95, s
    # Clean prose of every length carries no flag at all.
    assert [flags[r] for r in planted.clean if flags[r]] == []


def test_one_word_edits_of_40_to_80_word_answers_are_near_duplicates(tmp_path: Path) -> None:
    # The case users planted: copies differing by one word (Jaccard about 0.75-0.85).
    rng = random.Random(11)
    texts, copies = [], []
    for _ in range(100):
        words = prose_words(rng, rng.randint(40, 80))
        edited = list(words)
        edited[rng.randrange(len(words))] = rng.choice(NOUNS) + "x"
        texts.append(" ".join(words))
        texts.append(" ".join(edited))
        copies.append(len(texts) - 1)
        assert 0.7 <= jaccard(texts[-2], texts[-1]) < 1.0
    flags = _audit_flags(tmp_path, texts)
    found = sum("near_duplicate" in flags[r] for r in copies)
    assert found >= 95, f"{found} of 100 one-word edits found"
    assert not any("near_duplicate" in flags[r - 1] for r in copies)  # the first of each pair


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_lsh_puts_pairs_at_the_threshold_among_candidates(threshold: float) -> None:
    from nexa_engines.audit.minhash import lsh_parameters

    cut, bands, rows = lsh_parameters(threshold, 128)
    assert cut < threshold and bands * rows <= 128
    candidate = 1.0 - (1.0 - threshold**rows) ** bands
    assert candidate >= 0.98
