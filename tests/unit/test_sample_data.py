"""The generated SFT sample dataset: deterministic, three formats, planted problems where it says."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from nexa_engines.sample_data import generate_sft_dataset


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    a = generate_sft_dataset(tmp_path / "a.parquet", num_rows=300, seed=4)
    b = generate_sft_dataset(tmp_path / "b.parquet", num_rows=300, seed=4)
    c = generate_sft_dataset(tmp_path / "c.parquet", num_rows=300, seed=5)
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))
    assert a["planted"] == b["planted"]
    assert not pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "c.parquet"))
    assert a["planted"] != c["planted"]


def test_planted_rows_are_what_they_claim(tmp_path: Path) -> None:
    info = generate_sft_dataset(tmp_path / "s.parquet", num_rows=1000, seed=1)
    rows = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert info["counts"] == dict.fromkeys(info["planted"], 20)
    all_planted = [r for rs in info["planted"].values() for r in rs]
    assert len(all_planted) == len(set(all_planted))
    for r in info["planted"]["empty"]:
        assert rows[r]["response"].strip() == ""
    for r in info["planted"]["exact_duplicate"]:
        src = info["sources"][r]
        assert src < r and rows[src]["response"] == rows[r]["response"]
    for r in info["planted"]["near_duplicate"]:
        src = info["sources"][r]
        original, copy = rows[src]["response"].split(" "), rows[r]["response"].split(" ")
        assert src < r and len(original) == len(copy) >= 80
        assert 1 <= sum(x.lower() != y.lower() for x, y in zip(original, copy, strict=True)) <= 2
    for r in info["planted"]["pii"]:
        assert "@example.org" in rows[r]["response"] or "call me" in rows[r]["response"]
    # clean rows are unique
    planted = set(all_planted)
    clean = [(x["instruction"], x["response"]) for i, x in enumerate(rows) if i not in planted]
    assert len(clean) == len(set(clean))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_text_formats_hold_the_same_rows(tmp_path: Path, fmt: str) -> None:
    generate_sft_dataset(tmp_path / "s.parquet", num_rows=200, seed=9)
    generate_sft_dataset(tmp_path / f"s.{fmt}", num_rows=200, seed=9, fmt=fmt)
    expected = pq.read_table(tmp_path / "s.parquet").to_pylist()
    if fmt == "jsonl":
        got = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text(encoding="utf-8").splitlines()]
    else:
        parse = pacsv.ParseOptions(newlines_in_values=True)
        got = pacsv.read_csv(tmp_path / "s.csv", parse_options=parse).to_pylist()
    assert got == expected


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_sft_dataset(tmp_path / "x.txt", fmt="txt")
    with pytest.raises(ValueError):
        generate_sft_dataset(tmp_path / "x.parquet", num_rows=10)
