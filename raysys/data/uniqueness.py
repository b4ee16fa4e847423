"""Uniqueness of a column across a whole dataset, in hash buckets that each fit in memory.

Every bucket is one Ray task that reads only that column and keeps only the values whose hash
falls in its bucket, so memory per task is about rows / buckets values, whatever the size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq

ROWS_PER_BUCKET = 4_000_000
EXAMPLES = 5


def bucket_of(values: pd.Series, buckets: int) -> np.ndarray:
    """The bucket of each value (stable across processes)."""
    hashes = pd.util.hash_pandas_object(values, index=False).to_numpy(np.uint64)
    return (hashes % np.uint64(buckets)).astype(np.int64)


def duplicates(values: pd.Series) -> tuple[int, list]:
    """How many distinct non-null values occur more than once, and a few of them."""
    counts = values.dropna().value_counts()
    repeated = counts[counts > 1]
    return len(repeated), sorted(repeated.index.tolist(), key=str)[:EXAMPLES]


def bucket_duplicates(paths: list[str], fs: pafs.FileSystem, column: str, bucket: int, buckets: int) -> tuple[int, list]:
    """Duplicates among the values of one bucket, read file by file."""
    kept = []
    for path in paths:
        values = pq.read_table(path, columns=[column], filesystem=fs).column(column).to_pandas()
        kept.append(values[bucket_of(values, buckets) == bucket] if buckets > 1 else values)
    return duplicates(pd.concat(kept, ignore_index=True)) if kept else (0, [])


def find_duplicates(paths: list[str], fs: pafs.FileSystem, column: str, rows: int) -> tuple[int, list]:
    """Duplicated values of a column over many Parquet files, one Ray task per bucket."""
    import ray

    buckets = max(1, -(-rows // ROWS_PER_BUCKET))
    task = ray.remote(num_cpus=1)(bucket_duplicates)
    results = ray.get([task.remote(paths, fs, column, b, buckets) for b in range(buckets)])
    examples = sorted((e for _, found in results for e in found), key=str)[:EXAMPLES]
    return sum(count for count, _ in results), examples
