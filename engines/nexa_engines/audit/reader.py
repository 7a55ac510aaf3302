"""Batched reading of parquet, JSON Lines and CSV datasets with pyarrow.

Reading twice gives the same batches in the same order, which the engine relies
on when an input too large to keep in memory is read again to write the scored copy.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from nexa_engines.engine import EngineError
from nexa_store.datasets import MAX_DATASET_COLUMNS

FORMATS = ("parquet", "jsonl", "csv")
# CSV and JSON types are inferred from the first block; a large block makes a type
# that changes deep in the file (a column of numbers that later holds text) rare.
_TEXT_BLOCK_BYTES = 32 << 20
MIN_BATCH_ROWS = 1024
# How much of a text file's start is read to count its columns (a header longer than this is cut).
_HEAD_BYTES = 4 << 20


@dataclass(frozen=True)
class DatasetReader:
    """Reads one dataset file in record batches of at most ``batch_size`` rows.

    With ``batch_bytes``, a batch also stays near that many bytes of decoded data
    (estimated per parquet file from its metadata, per JSON/CSV block from the block),
    but never drops below ``MIN_BATCH_ROWS`` rows: short rows come in large batches,
    long documents in smaller ones.
    """

    path: Path
    format: str
    batch_size: int = 8192
    batch_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise EngineError(
                "dataset_unreadable",
                f"unsupported dataset format '{self.format}' (supported: {', '.join(FORMATS)})",
            )

    def _fail(self, exc: Exception) -> EngineError:
        return EngineError(
            "dataset_unreadable",
            f"cannot read {self.path.name} as {self.format}: {exc}. "
            "Check the file is valid; for CSV/JSONL with columns whose type changes partway, convert to parquet.",
        )

    def _parquet_files(self) -> list[Path]:
        # A directory is one parquet dataset: its files in path order, hidden ones skipped.
        if not self.path.is_dir():
            return [self.path]
        files = sorted(
            p
            for p in self.path.rglob("*.parquet")
            if not any(part.startswith((".", "_")) for part in p.relative_to(self.path).parts)
        )
        if not files:
            raise EngineError("dataset_unreadable", f"directory {self.path.name} holds no .parquet files")
        return files

    def schema(self) -> pa.Schema:
        """The dataset's columns and types."""
        try:
            if self.format == "parquet":
                return pq.ParquetFile(self._parquet_files()[0]).schema_arrow
            return self._open_stream().schema
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise self._fail(exc) from exc

    def num_rows(self) -> int | None:
        """The row count when the file records it (parquet), else ``None``."""
        if self.format != "parquet":
            return None
        try:
            return sum(int(pq.ParquetFile(f).metadata.num_rows) for f in self._parquet_files())
        except (pa.ArrowException, OSError) as exc:
            raise self._fail(exc) from exc

    def _check_width(self) -> None:
        """Refuse a CSV/JSONL whose first record has more than ``MAX_DATASET_COLUMNS`` columns.

        Checked on the first line before Arrow reads a block: a narrow file of very
        many columns costs Arrow far more memory than its size (a 10 MB CSV of
        100k columns would take gigabytes).
        """
        with pa.input_stream(str(self.path), compression="detect") as raw:
            head = raw.read(_HEAD_BYTES)
        first = head.split(b"\n", 1)[0]
        if self.format == "csv":
            width = len(next(csv.reader([first.decode("utf-8", "replace")]), []))
        else:
            try:
                record = json.loads(first) if first.strip() else {}
            except ValueError:
                return  # not one whole JSON object on the first line: Arrow says what is wrong
            width = len(record) if isinstance(record, dict) else 0
        if width > MAX_DATASET_COLUMNS:
            raise EngineError(
                "too_many_columns",
                f"{self.path.name} has {width} columns; at most {MAX_DATASET_COLUMNS} are read",
            )

    def _open_stream(self) -> pa.RecordBatchReader:
        self._check_width()
        # "detect" decompresses by extension (.jsonl.gz).
        source = pa.input_stream(str(self.path), compression="detect")
        if self.format == "csv":
            return pacsv.open_csv(
                source,
                read_options=pacsv.ReadOptions(block_size=_TEXT_BLOCK_BYTES),
                # Text fields routinely hold line breaks inside quotes.
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
            )
        return pajson.open_json(source, read_options=pajson.ReadOptions(block_size=_TEXT_BLOCK_BYTES))

    def _rows_per_batch(self, rows: int, nbytes: int) -> int:
        """The batch size for data where ``rows`` rows take ``nbytes`` bytes."""
        if self.batch_bytes is None or rows <= 0 or nbytes <= 0:
            return self.batch_size
        fitting = self.batch_bytes * rows // nbytes
        return max(1, min(self.batch_size, max(MIN_BATCH_ROWS, fitting)))

    def _raw_batches(self) -> Iterator[pa.RecordBatch]:
        if self.format == "parquet":
            files = self._parquet_files()
            schema = pq.ParquetFile(files[0]).schema_arrow
            if len(schema) > MAX_DATASET_COLUMNS:
                raise EngineError(
                    "too_many_columns",
                    f"{files[0].name} has {len(schema)} columns; at most {MAX_DATASET_COLUMNS} are read",
                )
            for file in files:
                parquet = pq.ParquetFile(file)
                meta = parquet.metadata
                decoded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
                size = self._rows_per_batch(meta.num_rows, decoded)
                for batch in parquet.iter_batches(batch_size=size):
                    if batch.schema != schema:
                        raise ValueError(f"{file.name} has different columns from {files[0].name}")
                    yield batch
            return
        stream = self._open_stream()
        for block in stream:
            size = self._rows_per_batch(block.num_rows, block.nbytes)
            for start in range(0, block.num_rows, size):
                yield block.slice(start, size)

    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        """Every row, in file order, in batches; unreadable data raises EngineError."""
        batches = self._raw_batches()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise self._fail(exc) from exc
            if batch.num_rows:
                yield batch
