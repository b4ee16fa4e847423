"""The ingest pipeline: source → validate → stage Parquet → dataset-level checks → publish.

One streaming pass on Ray Data: each write task validates its blocks, writes accepted rows and
quarantined rows to a staging directory, and returns counts, row hashes and column statistics.
The driver merges those, runs the dataset-level checks, and only then publishes the version
(manifest last). Any failure discards the staging directory, so no partial version is visible.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data
from ray.data.datasource import Datasink, WriteResult

from raysys.config import ColumnSpec, DataConfig, SchemaConfig
from raysys.data import stats, uniqueness, validation
from raysys.data.sources import RAW_LINE, SOURCE_ERROR, read_source
from raysys.data.store import DatasetStore, Manifest, combine_hashes, rows_hash, version_id
from raysys.errors import ValidationFailed
from raysys.runtime import user_errors
from raysys.secrets import mask_source
from raysys.storage import Storage

REASON = "_reason"
PANDAS_INDEX = re.compile(r"^__index_level_\d+__$")  # pandas' index, stored in some Parquet files
SAMPLE_ROWS = 5


@dataclass
class TaskSummary:
    """What one write task (or the whole write, once merged) produced."""

    rows_read: int = 0
    accepted: int = 0
    quarantined: int = 0
    hash_accepted: int = 0
    hash_quarantined: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    reasons: Counter = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    quarantine_files: list[str] = field(default_factory=list)

    def merge(self, other: TaskSummary) -> TaskSummary:
        """Combine two disjoint summaries."""
        return TaskSummary(
            rows_read=self.rows_read + other.rows_read,
            accepted=self.accepted + other.accepted,
            quarantined=self.quarantined + other.quarantined,
            hash_accepted=combine_hashes(self.hash_accepted, other.hash_accepted),
            hash_quarantined=combine_hashes(self.hash_quarantined, other.hash_quarantined),
            stats=stats.merge_stats(self.stats, other.stats) if self.stats and other.stats else self.stats or other.stats,
            reasons=self.reasons + other.reasons,
            samples=(self.samples + other.samples)[:SAMPLE_ROWS],
            problems=list(dict.fromkeys(self.problems + other.problems)),
            files=self.files + other.files,
            quarantine_files=self.quarantine_files + other.quarantine_files,
        )


def reason_kind(reason: str) -> str:
    """A reason with its values blanked, for counting: "age: 150 above max 100" → "age: … above max …"."""
    return re.sub(r"'[^']*'|-?\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b|\[[^\]]*\]", "…", reason)


def split_source_errors(frame: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Separate rows a source could not parse (quarantined as they are) from the rest."""
    if SOURCE_ERROR not in frame.columns:
        return frame, pd.DataFrame(columns=[*columns, RAW_LINE, REASON])
    bad_mask = frame[SOURCE_ERROR].notna()
    bad = frame.loc[bad_mask, [c for c in columns if c in frame.columns] + [RAW_LINE]].copy()
    bad[REASON] = frame.loc[bad_mask, SOURCE_ERROR]
    good = frame.loc[~bad_mask].drop(columns=[SOURCE_ERROR, RAW_LINE])
    return good, bad


def validate_frame(frame: pd.DataFrame, schema: SchemaConfig) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Row-level validation of one batch: (accepted, quarantined, dataset-level problems)."""
    columns = list(schema.columns)
    frame = frame.drop(columns=[c for c in frame.columns if PANDAS_INDEX.match(str(c))])
    good, unparsable = split_source_errors(frame, columns)
    problems = validation.check_columns([c for c in good.columns], schema)
    if problems:
        return good.iloc[:0], unparsable, problems
    accepted, rejected = validation.validate_batch(good, schema)
    quarantined = pd.concat([rejected, unparsable], ignore_index=True) if len(unparsable) else rejected
    return accepted, normalize_quarantine(quarantined, columns), []


def normalize_quarantine(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Quarantined rows with a fixed layout: the declared columns, _raw and _reason."""
    return frame.reindex(columns=[*columns, RAW_LINE, REASON])


class ValidatingSink(Datasink):
    """Validates blocks and stages accepted and quarantined rows as Parquet."""

    def __init__(self, storage: Storage, staging: str, schema: SchemaConfig):
        self.storage, self.staging, self.schema = storage, staging, schema
        self.columns = list(schema.columns)
        self.types = {name: spec.type for name, spec in schema.columns.items()}
        self.result: TaskSummary | None = None

    def write(self, blocks: Iterable[Any], ctx) -> TaskSummary:
        """Validate and stage every block of one task."""
        from ray.data.block import BlockAccessor

        return self.write_frames(BlockAccessor.for_block(block).to_pandas() for block in blocks)

    def write_frames(self, frames: Iterable[pd.DataFrame]) -> TaskSummary:
        """Validate and stage frames into one data file and one quarantine file."""
        summary, writers = TaskSummary(), {}
        try:
            for frame in frames:
                summary = summary.merge(self._write_block(frame, writers, summary))
                if summary.problems:
                    break
        finally:
            for writer in writers.values():
                writer.close()
        return summary

    def _write_block(self, frame: pd.DataFrame, writers: dict, sofar: TaskSummary) -> TaskSummary:
        accepted, quarantined, problems = validate_frame(frame, self.schema)
        part = TaskSummary(rows_read=len(frame), problems=problems)
        if problems:
            return part
        if len(accepted):
            table = validation.to_arrow(accepted, self.schema.columns).replace_schema_metadata(None)
            self._writer(writers, "data", table.schema, part).write_table(table)
            part.accepted, part.hash_accepted = len(accepted), rows_hash(table)
            part.stats = stats.batch_stats(accepted, self.types)
        if len(quarantined):
            table = validation.quarantine_arrow(quarantined)
            self._writer(writers, "quarantine", table.schema, part).write_table(table)
            part.quarantined, part.hash_quarantined = len(quarantined), rows_hash(table)
            part.reasons = Counter(reason_kind(r) for part_reason in quarantined[REASON] for r in part_reason.split("; "))
            if len(sofar.samples) < SAMPLE_ROWS:
                part.samples = quarantined.head(SAMPLE_ROWS).to_dict("records")
        return part

    def _writer(self, writers: dict, kind: str, schema: pa.Schema, part: TaskSummary) -> pq.ParquetWriter:
        if kind not in writers:
            path = f"{self.staging}/{kind}/part-{uuid.uuid4().hex}.parquet"
            self.storage.fs.create_dir(self.storage.path(self.staging, kind), recursive=True)
            writers[kind] = pq.ParquetWriter(self.storage.path(path), schema, filesystem=self.storage.fs)
            (part.files if kind == "data" else part.quarantine_files).append(path)
        return writers[kind]

    def on_write_complete(self, write_result: WriteResult[TaskSummary]) -> None:
        """Merge the summaries of every task (runs on the driver)."""
        total = TaskSummary()
        for summary in write_result.write_returns:
            total = total.merge(summary)
        self.result = total


@dataclass
class IngestResult:
    """The outcome of an ingest (or a dry-run validation)."""

    manifest: Manifest
    created: bool
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the CLI."""
        return {"version": self.manifest.version, "created": self.created, **self.report}


def effective_schema(data: DataConfig, dataset: ray.data.Dataset) -> SchemaConfig:
    """The declared expectations, or a schema inferred from the first rows."""
    if data.schema_.columns:
        return data.schema_
    sample = dataset.limit(1000).to_pandas()
    sample = sample.drop(columns=[c for c in sample.columns if c in (SOURCE_ERROR, RAW_LINE) or PANDAS_INDEX.match(str(c))])
    return SchemaConfig(columns=validation.infer_columns(sample), extra_columns="drop")


def run_ingest(store: DatasetStore, data: DataConfig, publish: bool = True) -> IngestResult:
    """Read, validate and stage the configured source; publish unless it is a dry run."""
    label = f"{data.source.kind} source {getattr(data.source, 'path', '') or data.name}".strip()
    staging = store.new_staging(data.name)
    try:
        with user_errors(label):
            dataset = read_source(data.source, data.schema_.columns)
            schema = effective_schema(data, dataset)
            sink = ValidatingSink(store.storage, staging, schema)
            dataset.write_datasink(sink)
        summary = sink.result or TaskSummary()
        report = build_report(summary, schema)
        check_dataset_level(store, summary, schema, report)
        manifest = build_manifest(store, data.name, data.source.model_dump(mode="json"), schema, summary, report)
        if not publish:
            store.discard(staging)
            return IngestResult(manifest, False, report)
        manifest, created = store.publish(manifest, staging, {"files": summary.files, "quarantine_files": summary.quarantine_files})
        return IngestResult(manifest, created, report)
    except BaseException:
        store.discard(staging)
        raise


def build_report(summary: TaskSummary, schema: SchemaConfig) -> dict[str, Any]:
    """Counts that always reconcile, plus the quarantine reasons and a few sample rows."""
    return {
        "rows_read": summary.rows_read,
        "accepted": summary.accepted,
        "quarantined": summary.quarantined,
        "reconciled": summary.rows_read == summary.accepted + summary.quarantined,
        "quarantine_reasons": dict(summary.reasons.most_common(20)),
        "quarantine_samples": summary.samples,
        "problems": summary.problems,
    }


def check_dataset_level(store: DatasetStore, summary: TaskSummary, schema: SchemaConfig, report: dict) -> None:
    """Stop the pipeline on schema problems, null rates over their limits, or duplicates."""
    problems = list(summary.problems)
    if summary.stats:
        final = stats.finalize_stats(summary.stats)
        problems += stats.null_rate_failures(final, schema.columns)
    problems += duplicate_problems(store.storage, summary.files, schema.columns, summary.accepted)
    if problems:
        report["problems"] = problems
        raise ValidationFailed("validation failed: " + "; ".join(problems), report)


def duplicate_problems(storage: Storage, files: list[str], columns: dict[str, ColumnSpec], rows: int) -> list[str]:
    """Problems for columns declared unique that hold a value more than once."""
    problems = []
    paths = [storage.path(f) for f in files]
    for name in [n for n, spec in columns.items() if spec.unique and files]:
        count, examples = uniqueness.find_duplicates(paths, storage.fs, name, rows)
        if count:
            shown = ", ".join(map(str, examples))
            problems.append(f"column '{name}': {count} values appear more than once (e.g. {shown})")
    return problems


def build_manifest(store: DatasetStore, name: str, source: dict[str, Any], schema: SchemaConfig,
                   summary: TaskSummary, report: dict) -> Manifest:
    """The manifest of a staged write (files are filled in by the store on publish)."""
    types = {name: spec.type for name, spec in schema.columns.items()}
    accepted = (summary.accepted, summary.hash_accepted)
    quarantined = (summary.quarantined, summary.hash_quarantined)
    parent = store.latest(name)
    return Manifest(
        name=name,
        version=version_id(types, accepted, quarantined),
        schema=types,
        columns={n: s.model_dump(exclude_defaults=True) for n, s in schema.columns.items()},
        row_count=summary.accepted,
        quarantined_count=summary.quarantined,
        rows_read=summary.rows_read,
        files=[],
        quarantine_files=[],
        content={"accepted": [accepted[0], f"{accepted[1]:016x}"], "quarantined": [quarantined[0], f"{quarantined[1]:016x}"]},
        stats=stats.finalize_stats(summary.stats) if summary.stats else {},
        stats_partial=summary.stats,
        quarantine_reasons=report["quarantine_reasons"],
        source=mask_source(source),  # the manifest leaves the process: no secrets in it
        parent=parent.version if parent else None,
    )


def append_rows(store: DatasetStore, name: str, frame: pd.DataFrame, schema: SchemaConfig | None = None,
                source: dict[str, Any] | None = None) -> IngestResult:
    """Append a micro-batch as a new version that reuses its parent's files.

    The schema defaults to the parent's. Uniqueness is checked within the batch only: a
    micro-batch must not pay for a scan of everything before it.
    """
    parent = store.latest(name)
    schema = schema or _parent_schema(parent, name)
    staging = store.new_staging(name)
    try:
        batch = ValidatingSink(store.storage, staging, schema).write_frames([frame])
        report = build_report(batch, schema)
        problems = batch.problems + _batch_duplicates(frame, schema.columns)
        summary = _summary_of(parent).merge(batch) if parent else batch
        if summary.stats:
            problems += stats.null_rate_failures(stats.finalize_stats(summary.stats), schema.columns)
        if problems:
            report["problems"] = problems
            raise ValidationFailed("validation failed: " + "; ".join(problems), report)
        manifest = build_manifest(store, name, source or {"kind": "append"}, schema, summary, report)
        manifest.files = parent.files if parent else []
        manifest.quarantine_files = parent.quarantine_files if parent else []
        manifest, created = store.publish(manifest, staging, {"files": batch.files, "quarantine_files": batch.quarantine_files})
        return IngestResult(manifest, created, report)
    except BaseException:
        store.discard(staging)
        raise


def _parent_schema(parent: Manifest | None, name: str) -> SchemaConfig:
    if parent is None:
        raise ValidationFailed(f"dataset '{name}' has no versions: pass the schema of its first append")
    return SchemaConfig(columns={n: ColumnSpec(**spec) for n, spec in parent.columns.items()})


def _summary_of(manifest: Manifest) -> TaskSummary:
    return TaskSummary(
        rows_read=manifest.rows_read,
        accepted=manifest.row_count,
        quarantined=manifest.quarantined_count,
        hash_accepted=int(manifest.content["accepted"][1], 16),
        hash_quarantined=int(manifest.content["quarantined"][1], 16),
        stats=manifest.stats_partial,
    )


def _batch_duplicates(frame: pd.DataFrame, columns: dict[str, ColumnSpec]) -> list[str]:
    problems = []
    for name in [n for n, spec in columns.items() if spec.unique and n in frame.columns]:
        count, examples = uniqueness.duplicates(frame[name])
        if count:
            problems.append(f"column '{name}': {count} values appear more than once (e.g. {', '.join(map(str, examples))})")
    return problems
