"""Dataset uploads: gzip with a bomb cap, and block-wise inspection with column and row caps."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest

from nexa_gateway.errors import ApiError
from nexa_gateway.services import uploads


def _copy(tmp_path: Path, data: bytes, *, gzipped: bool, max_bytes: int = 1 << 30) -> Path:
    target = tmp_path / "data.jsonl"
    uploads.copy_upload(io.BytesIO(data), target, max_bytes=max_bytes, gzipped=gzipped)
    return target


def test_gzip_uploads_are_inflated_as_they_stream(tmp_path: Path) -> None:
    rows = b"".join(json.dumps({"text": f"row {i}", "n": i}).encode() + b"\n" for i in range(50_000))
    target = _copy(tmp_path, gzip.compress(rows), gzipped=True)
    assert target.read_bytes() == rows
    assert uploads.inspect_table(target, "jsonl") == (50_000, ["text", "n"])


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (gzip.compress(b"\0" * (64 << 20)), "payload_too_large"),  # 64 MiB of zeros: ~1000x
        (gzip.compress(b'{"a": 1}\n' * 1000)[:-12], "dataset_unreadable"),  # truncated
        (b"not gzip at all", "dataset_unreadable"),
    ],
    ids=["bomb", "truncated", "not-gzip"],
)
def test_bad_gzip_is_refused_with_a_clear_code(tmp_path: Path, data: bytes, code: str) -> None:
    with pytest.raises(ApiError) as caught:
        _copy(tmp_path, data, gzipped=True)
    assert caught.value.type == code


def test_the_size_cap_counts_inflated_bytes(tmp_path: Path) -> None:
    rows = b"".join(b'{"text": "%d"}\n' % i for i in range(10_000))
    with pytest.raises(ApiError) as caught:
        _copy(tmp_path, gzip.compress(rows), gzipped=True, max_bytes=len(rows) // 2)
    assert caught.value.status_code == 413
    with pytest.raises(ApiError):
        _copy(tmp_path, rows, gzipped=False, max_bytes=len(rows) - 1)


def test_jsonl_blocks_may_disagree_on_keys(tmp_path: Path) -> None:
    # Far more than one inspection block, with a key that appears only at the end.
    path = tmp_path / "d.jsonl"
    with path.open("w") as out:
        for i in range(400_000):
            out.write(json.dumps({"text": "x" * 20, "v": i}) + "\n")
        for i in range(10):
            out.write(json.dumps({"text": "y", "v": i, "late": True}) + "\n")
    assert path.stat().st_size > 2 * uploads._JSONL_BLOCK
    assert uploads.inspect_table(path, "jsonl") == (400_010, ["text", "v", "late"])


def test_rows_and_columns_are_capped(tmp_path: Path) -> None:
    big_row = tmp_path / "big.jsonl"
    big_row.write_text('{"text": "a"}\n' + json.dumps({"text": "x" * (uploads.MAX_ROW_BYTES + 10)}) + "\n")
    with pytest.raises(ApiError) as caught:
        uploads.inspect_table(big_row, "jsonl")
    assert caught.value.type == "row_too_large"
    just_fits = tmp_path / "fits.jsonl"
    just_fits.write_text(json.dumps({"text": "x" * (uploads.MAX_ROW_BYTES - 20)}) + "\n" + '{"text": "b"}\n')
    assert uploads.inspect_table(just_fits, "jsonl") == (2, ["text"])

    wide = tmp_path / "wide.csv"
    names = [f"c{i}" for i in range(uploads.MAX_COLUMNS + 1)]
    wide.write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n")
    with pytest.raises(ApiError) as caught:
        uploads.inspect_table(wide, "csv")
    assert caught.value.type == "too_many_columns" and str(uploads.MAX_COLUMNS) in caught.value.message

    wide_json = tmp_path / "wide.jsonl"
    wide_json.write_text(json.dumps(dict.fromkeys(names, 1)) + "\n")
    with pytest.raises(ApiError) as caught:
        uploads.inspect_table(wide_json, "jsonl")
    assert caught.value.type == "too_many_columns"


def test_csv_is_read_as_text_so_late_type_changes_do_not_fail(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    with path.open("w") as out:
        out.write("id,text\n")
        for i in range(300_000):
            out.write(f'{i},"row, number {i}"\n')
        out.write('not-a-number,"multi\nline"\n')
    assert uploads.inspect_table(path, "csv") == (300_001, ["id", "text"])
    broken = tmp_path / "broken.csv"
    broken.write_text("a,b\n1,2,3\n")
    with pytest.raises(ApiError) as caught:
        uploads.inspect_table(broken, "csv")
    assert caught.value.type == "dataset_unreadable"
