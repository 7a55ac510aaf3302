"""Dataset uploads with memory that stays flat whatever the file: stream, cap, then inspect in blocks.

A file is written to staging as it arrives (gzip inflated on the way, with a cap
on how far it may expand), then inspected block by block for its row count and
columns. Nothing reads a whole file into memory, so a 1 GB upload costs the
gateway about what a 1 MB one does.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import IO

import pyarrow as pa

from nexa_gateway.errors import ApiError
from nexa_store.datasets import MAX_DATASET_COLUMNS

CHUNK = 1 << 20
# A multipart body is the file plus its envelope (boundaries, part headers, form fields).
MULTIPART_SLACK = 64 * 1024
# A row (one JSONL line, one CSV record) larger than this is refused: it is no training example.
MAX_ROW_BYTES = 16 << 20
MAX_COLUMNS = MAX_DATASET_COLUMNS
# A gzip upload may inflate to at most this many times its compressed size (a zip bomb inflates 1000x+).
MAX_GZIP_RATIO = 200
_JSONL_BLOCK = 8 << 20
_CSV_BLOCK = 1 << 20


def _too_large(limit: int, what: str = "upload") -> ApiError:
    return ApiError(413, "payload_too_large", f"{what} exceeds the {limit}-byte limit", field="file")


def refuse_declared_over(declared: str | None, limit: int, *, slack: int = 0, what: str = "upload") -> None:
    """413 before reading a body whose declared Content-Length already passes ``limit`` (+ ``slack`` for the
    multipart envelope); the streamed copy still counts what really arrives."""
    if declared and declared.isdigit() and int(declared) > limit + slack:
        raise ApiError(413, "payload_too_large", f"{what} exceeds the {limit}-byte limit")


def copy_upload(stream: IO[bytes], target: Path, *, max_bytes: int, gzipped: bool) -> int:
    """Write the upload to ``target`` (inflating gzip), refusing past ``max_bytes``; the bytes written."""
    inflate = zlib.decompressobj(wbits=31) if gzipped else None  # 31: gzip header and trailer
    received = written = 0
    with target.open("wb") as out:
        while chunk := stream.read(CHUNK):
            received += len(chunk)
            if received > max_bytes:
                raise _too_large(max_bytes)
            if inflate is None:
                out.write(chunk)
                written += len(chunk)
                continue
            try:
                data = inflate.decompress(chunk, CHUNK)
                while True:
                    written += len(data)
                    if written > max_bytes:
                        raise _too_large(max_bytes, "the inflated upload")
                    if written > MAX_GZIP_RATIO * received + CHUNK:
                        raise ApiError(
                            413,
                            "payload_too_large",
                            f"the gzip upload inflates more than {MAX_GZIP_RATIO}x; refused as a likely bomb",
                            field="file",
                        )
                    out.write(data)
                    if not inflate.unconsumed_tail:
                        break
                    data = inflate.decompress(inflate.unconsumed_tail, CHUNK)
            except zlib.error as exc:
                raise ApiError(
                    400, "dataset_unreadable", f"the upload is not valid gzip: {exc}", field="file"
                ) from exc
    if inflate is not None and not inflate.eof:
        raise ApiError(400, "dataset_unreadable", "the gzip upload is truncated", field="file")
    return written


def _unreadable(fmt: str, detail: object) -> ApiError:
    return ApiError(
        400, "dataset_unreadable", f"the uploaded file is not valid {fmt}: {detail}", field="file"
    )


def _check_columns(columns: list[str]) -> list[str]:
    if len(columns) > MAX_COLUMNS:
        raise ApiError(
            422,
            "too_many_columns",
            f"the dataset has {len(columns)} columns; at most {MAX_COLUMNS} are accepted",
            field="file",
        )
    return columns


def _row_too_large() -> ApiError:
    return ApiError(
        422,
        "row_too_large",
        f"a row is larger than {MAX_ROW_BYTES >> 20} MiB; rows must be smaller",
        field="file",
    )


def _inspect_jsonl(path: Path) -> tuple[int, list[str]]:
    """Rows and the union of keys, parsing line-aligned blocks of a few MiB one at a time."""
    import pyarrow.json as pj

    rows = 0
    columns: dict[str, None] = {}
    carry = b""
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(_JSONL_BLOCK)
            if chunk:
                # Lines inside one read are shorter than a read; only one that spans reads can be
                # too long, and its length is the carried start plus the rest up to the newline.
                first = chunk.find(b"\n")
                if len(carry) + (len(chunk) if first < 0 else first) > MAX_ROW_BYTES:
                    raise _row_too_large()
                data = carry + chunk
                cut = data.rfind(b"\n")
                block, carry = (b"", data) if cut < 0 else (data[: cut + 1], data[cut + 1 :])
            else:
                block, carry = carry, b""
            if block.strip():
                try:
                    table = pj.read_json(
                        io.BytesIO(block), read_options=pj.ReadOptions(block_size=MAX_ROW_BYTES + CHUNK)
                    )
                except pa.ArrowInvalid as exc:
                    raise _unreadable("jsonl", exc) from exc
                rows += table.num_rows
                for name in table.column_names:
                    columns.setdefault(name, None)
                _check_columns(list(columns))
            if not chunk:
                return rows, list(columns)


def _inspect_csv(path: Path) -> tuple[int, list[str]]:
    """Rows and header, streaming small blocks with only the first column decoded (as text).

    Arrow's CSV reader needs several times its block size, so blocks are 1 MiB; a
    row longer than that (Arrow: "straddling") is read again with blocks of
    ``MAX_ROW_BYTES``, and a row longer than that is refused.
    """
    for block in (_CSV_BLOCK, MAX_ROW_BYTES):
        try:
            return _count_csv(path, block)
        except pa.ArrowInvalid as exc:
            if "straddling" not in str(exc):
                raise _unreadable("csv", exc) from exc
    raise _row_too_large()


def _count_csv(path: Path, block: int) -> tuple[int, list[str]]:
    import pyarrow.csv as pc

    read = pc.ReadOptions(block_size=block, use_threads=False)
    parse = pc.ParseOptions(newlines_in_values=True)  # text fields hold line breaks inside quotes
    with pc.open_csv(path, read_options=read, parse_options=parse) as head:
        names = _check_columns(list(head.schema.names))
    # Counting rows needs the parser, not the values: decode one column, as text (no type guessing).
    first = pc.ConvertOptions(column_types={names[0]: pa.string()}, include_columns=names[:1])
    rows = 0
    with pc.open_csv(path, read_options=read, parse_options=parse, convert_options=first) as reader:
        for batch in reader:
            rows += batch.num_rows
    return rows, names


def inspect_table(path: Path, fmt: str) -> tuple[int, list[str]]:
    """Row count and columns of a staged upload; ``ApiError`` when it is not what it claims or breaks a cap."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path)
            return meta.metadata.num_rows, _check_columns(list(meta.schema_arrow.names))
        if fmt == "jsonl":
            return _inspect_jsonl(path)
        return _inspect_csv(path)
    except ApiError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _unreadable(fmt, exc) from exc
