"""Batched reading of parquet, JSON Lines and CSV datasets with pyarrow.

Reading twice gives the same batches in the same order, which the engine relies
on: it scores in a first pass and writes the scored copy in a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from nexa_engines.engine import EngineError

FORMATS = ("parquet", "jsonl", "csv")
# CSV and JSON types are inferred from the first block; a large block makes a type
# that changes deep in the file (a column of numbers that later holds text) rare.
_TEXT_BLOCK_BYTES = 32 << 20


@dataclass(frozen=True)
class DatasetReader:
    """Reads one dataset file in record batches of at most ``batch_size`` rows."""

    path: Path
    format: str
    batch_size: int = 8192

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

    def schema(self) -> pa.Schema:
        """The dataset's columns and types."""
        try:
            if self.format == "parquet":
                return pq.ParquetFile(self.path).schema_arrow
            return self._open_stream().schema
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise self._fail(exc) from exc

    def num_rows(self) -> int | None:
        """The row count when the file records it (parquet), else ``None``."""
        if self.format != "parquet":
            return None
        try:
            return int(pq.ParquetFile(self.path).metadata.num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise self._fail(exc) from exc

    def _open_stream(self) -> pa.RecordBatchReader:
        if self.format == "csv":
            return pacsv.open_csv(self.path, read_options=pacsv.ReadOptions(block_size=_TEXT_BLOCK_BYTES))
        return pajson.open_json(self.path, read_options=pajson.ReadOptions(block_size=_TEXT_BLOCK_BYTES))

    def _raw_batches(self) -> Iterator[pa.RecordBatch]:
        if self.format == "parquet":
            yield from pq.ParquetFile(self.path).iter_batches(batch_size=self.batch_size)
            return
        stream = self._open_stream()
        for batch in stream:
            for start in range(0, batch.num_rows, self.batch_size):
                yield batch.slice(start, self.batch_size)

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
