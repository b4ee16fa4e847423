"""Sources: each configured kind becomes a lazy ``ray.data.Dataset`` of raw rows.

Text formats are read leniently (CSV columns named in the schema arrive as strings, JSON lines
arrive one record per line) so that one bad value quarantines one row instead of failing the
read; :mod:`raysys.data.validation` then coerces every row to the declared types. Rows that
cannot even be parsed carry their reason in ``SOURCE_ERROR`` and go to quarantine.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from raysys.config import (
    ColumnSpec,
    CsvSource,
    HttpSource,
    JsonLinesSource,
    ParquetSource,
    SklearnSource,
    SourceConfig,
    SqlSource,
    SyntheticSource,
)
from raysys.data import http_api, sql, synthetic
from raysys.errors import SourceError

SOURCE_ERROR = "_source_error"
RAW_LINE = "_raw"


def read_source(cfg: SourceConfig, columns: dict[str, ColumnSpec]) -> ray.data.Dataset:
    """Open a source lazily as a Ray Dataset; ``columns`` are the declared expectations."""
    readers = {
        CsvSource: _read_csv,
        ParquetSource: _read_parquet,
        JsonLinesSource: _read_jsonl,
        SqlSource: _read_sql,
        HttpSource: _read_http,
        SklearnSource: _read_sklearn,
        SyntheticSource: _read_synthetic,
    }
    return readers[type(cfg)](cfg, columns)


def expand_paths(cfg: CsvSource | ParquetSource | JsonLinesSource) -> list[str]:
    """The files a path, directory or glob names; a clear error if there are none."""
    label = f"{cfg.kind} source {cfg.path}"
    if "://" in cfg.path:
        fs, path = pafs.FileSystem.from_uri(cfg.path)
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise SourceError(f"{label}: no such file or directory")
        return [cfg.path]
    if any(ch in cfg.path for ch in "*?["):
        paths = sorted(glob.glob(cfg.path, recursive=True))
    elif os.path.isdir(cfg.path):
        paths = sorted(os.path.join(cfg.path, f) for f in os.listdir(cfg.path) if not f.startswith("."))
    else:
        paths = [cfg.path] if os.path.exists(cfg.path) else []
    if not paths:
        raise SourceError(f"{label}: no such file or directory")
    unreadable = [p for p in paths if not os.access(p, os.R_OK)]
    if unreadable:
        raise SourceError(f"{label}: cannot read {unreadable[0]} (permission denied)")
    return [os.path.abspath(p) for p in paths]


def _read_csv(cfg: CsvSource, columns: dict[str, ColumnSpec]) -> ray.data.Dataset:
    return ray.data.read_datasource(CsvDatasource(cfg, expand_paths(cfg), list(columns)))


def _read_parquet(cfg: ParquetSource, columns: dict[str, ColumnSpec]) -> ray.data.Dataset:
    return ray.data.read_parquet(expand_paths(cfg))


def _read_jsonl(cfg: JsonLinesSource, columns: dict[str, ColumnSpec]) -> ray.data.Dataset:
    lines = ray.data.read_text(expand_paths(cfg), drop_empty_lines=True)
    return lines.map_batches(parse_json_lines, batch_format="pandas", fn_kwargs={"columns": list(columns)})


def parse_json_lines(batch: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Parse a batch of text lines into flat records; unparseable lines keep their reason."""
    records, errors, raws = [], [], []
    for line in batch["text"]:
        problem = None
        try:
            record = json.loads(line)
        except ValueError as error:
            problem = _first_line(error)
        else:
            if not isinstance(record, dict):
                problem = f"expected a JSON object, got {type(record).__name__}"
        records.append({} if problem else record)
        errors.append(f"invalid JSON line: {problem}" if problem else None)
        raws.append(line if problem else None)
    frame = records_frame(records, columns)
    frame[SOURCE_ERROR] = errors
    frame[RAW_LINE] = raws
    return text_table(frame)


def text_table(frame: pd.DataFrame) -> pa.Table:
    """An Arrow table with every column typed as string (all-null columns included)."""
    schema = pa.schema([(str(name), pa.string()) for name in frame.columns])
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def records_frame(records: list[dict], columns: list[str]) -> pd.DataFrame:
    """Flatten JSON records (nested keys joined by '.') into a frame of text values or None.

    Values stay text so that one odd value cannot break a block's Arrow schema; validation
    coerces them to the declared types, row by row.
    """
    frame = pd.json_normalize(records) if records else pd.DataFrame(index=range(0))
    frame = frame.reindex(columns=list(dict.fromkeys([*columns, *frame.columns])))
    return frame.apply(lambda column: column.map(_as_text)) if len(frame) else frame.astype(object)


def _as_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0][:200]


def _read_sql(cfg: SqlSource, columns: dict[str, ColumnSpec]) -> ray.data.Dataset:
    sql.check_connection(cfg)
    return ray.data.read_sql(sql.build_query(cfg), sql.connection_factory(cfg.url))


def _read_sklearn(cfg: SklearnSource, columns: dict[str, ColumnSpec]) -> ray.data.Dataset:
    return ray.data.from_pandas(load_sklearn(cfg.dataset))


def load_sklearn(name: str) -> pd.DataFrame:
    """One of sklearn's bundled datasets as a frame: snake_case features and ``target``."""
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}")
    bunch = loader(as_frame=True)
    frame = bunch.frame.copy()
    frame.columns = [_snake(c) for c in frame.columns]
    return frame


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", str(name)).strip("_").lower()


class _GeneratorDatasource(Datasource):
    """A datasource whose read tasks call a generator of pandas frames."""

    def __init__(self, tasks: list[tuple[int, tuple]], row_bytes: int = 100):
        super().__init__()
        self._tasks = tasks  # (expected rows, arguments of self.generate)
        self._row_bytes = row_bytes

    def generate(self, *args: Any) -> Iterator[pd.DataFrame | pa.Table]:
        """Yield the frames (or Arrow tables) of one read task."""
        raise NotImplementedError

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(rows for rows, _ in self._tasks) * self._row_bytes

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list[ReadTask]:
        def read(args: tuple) -> Iterator[pa.Table]:
            for frame in self.generate(*args):
                yield frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)

        return [
            ReadTask(
                lambda args=args: read(args),
                BlockMetadata(num_rows=rows, size_bytes=rows * self._row_bytes, input_files=None, exec_stats=None),
                per_task_row_limit=per_task_row_limit,
            )
            for rows, args in self._tasks
        ]


class CsvDatasource(_GeneratorDatasource):
    """CSV files streamed in blocks, one read task per file.

    Columns named in the schema arrive as text (validation coerces them row by row); a row with
    the wrong number of fields stops the read with its file and row number.
    """

    BLOCK_BYTES = 16 << 20

    def __init__(self, cfg: CsvSource, paths: list[str], columns: list[str]):
        self.cfg, self.columns = cfg, columns
        super().__init__([(0, (path,)) for path in paths], row_bytes=0)
        self._sizes = [os.path.getsize(p) if os.path.exists(p) else 0 for p in paths]

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(self._sizes) * 2

    def generate(self, path: str) -> Iterator[pa.Table]:
        read = pacsv.ReadOptions(block_size=self.BLOCK_BYTES, use_threads=False)
        parse = pacsv.ParseOptions(delimiter=self.cfg.delimiter)
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in self.columns}, strings_can_be_null=True)
        try:
            with pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert) as reader:
                for batch in reader:
                    yield pa.Table.from_batches([batch])
        except (pa.ArrowInvalid, UnicodeDecodeError) as error:
            raise SourceError(f"csv source {path}: {_first_line(error)}") from None


class SyntheticDatasource(_GeneratorDatasource):
    """The drifting synthetic table, split into chunk-aligned read tasks."""

    def __init__(self, spec: SyntheticSource, rows_per_task: int):
        self.spec = spec
        bounds = list(range(0, spec.rows, rows_per_task)) + [spec.rows]
        super().__init__([(stop - start, (start, stop)) for start, stop in itertools.pairwise(bounds)])

    def generate(self, start: int, stop: int) -> Iterator[pd.DataFrame]:
        return synthetic.iter_chunks(self.spec, start, stop)


def _read_synthetic(cfg: SyntheticSource, columns: dict[str, ColumnSpec]) -> ray.data.Dataset:
    per_task = max(synthetic.CHUNK_ROWS, -(-cfg.rows // 64) // synthetic.CHUNK_ROWS * synthetic.CHUNK_ROWS)
    return ray.data.read_datasource(SyntheticDatasource(cfg, per_task))


class HttpDatasource(_GeneratorDatasource):
    """A paginated JSON API, fetched page by page inside one read task."""

    def __init__(self, cfg: HttpSource, columns: list[str]):
        self.cfg, self.columns = cfg, columns
        super().__init__([(0, ())], row_bytes=200)

    def generate(self) -> Iterator[pa.Table]:
        for page in http_api.iter_pages(self.cfg):
            if page:
                yield text_table(records_frame(page, self.columns))


def _read_http(cfg: HttpSource, columns: dict[str, ColumnSpec]) -> ray.data.Dataset:
    http_api.fetch_first_page(cfg)  # fail fast, on the driver, with a clear error
    return ray.data.read_datasource(HttpDatasource(cfg, list(columns)))
