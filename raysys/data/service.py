"""The data layer's Python API: what ``System.data`` offers and the CLI calls."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from raysys.config import SchemaConfig, SystemConfig
from raysys.data import features, splits, stats
from raysys.data.ingest import IngestResult, append_rows, run_ingest
from raysys.data.store import DatasetStore, Manifest
from raysys.errors import NotFound, RaysysError
from raysys.runtime import ensure_ray, parquet_reader_for, user_errors
from raysys.storage import Storage

FEATURES = "features"
SPLIT_PLANS = "splits"
SPLIT_COLUMN = "_split"
BATCH_ROWS = 65_536


@dataclass
class FeatureArtifact:
    """A fitted preprocessing state and where it came from."""

    state: features.FeatureState
    dataset: str
    version: str
    split: dict[str, Any]

    @property
    def id(self) -> str:
        """The content-derived id of the fitted state."""
        return self.state.state_id


class DataService:
    """Ingest, validate, version, split and preprocess the configured dataset."""

    def __init__(self, config: SystemConfig, storage: Storage):
        self.config = config
        self.storage = storage
        self.store = DatasetStore(storage)

    @property
    def name(self) -> str:
        """The configured dataset name."""
        return self.config.data.name

    # ------------------------------------------------------------------ versions

    def ingest(self) -> IngestResult:
        """Read, validate and publish the configured source as a new (or existing) version."""
        ensure_ray(self.config.ray, self.config.storage)
        return run_ingest(self.store, self.config.data, publish=True)

    def validate(self) -> IngestResult:
        """Run the same pipeline as ingest without publishing anything."""
        ensure_ray(self.config.ray, self.config.storage)
        return run_ingest(self.store, self.config.data, publish=False)

    def append(self, frame: pd.DataFrame, schema: SchemaConfig | None = None, source: dict | None = None) -> IngestResult:
        """Add a micro-batch of rows as a new version on top of the latest one."""
        return append_rows(self.store, self.name, frame, schema, source)

    def publish_rows(self, frame: pd.DataFrame, schema: SchemaConfig, source: dict) -> IngestResult:
        """A new version of these rows alone (validated, content-addressed); ``source`` says where they came from."""
        return append_rows(_Unrelated(self.storage), self.name, frame, schema, source)

    def versions(self) -> list[Manifest]:
        """Every published version, oldest first."""
        return self.store.versions(self.name)

    def show(self, ref: str = "latest") -> Manifest:
        """The manifest of a version (id, unique prefix, ``latest`` or ``latest~N``)."""
        return self.store.resolve(self.name, ref)

    def diff(self, old: str, new: str) -> dict[str, Any]:
        """Schema and statistics differences between two versions."""
        a, b = self.show(old), self.show(new)
        return {
            "old": a.version,
            "new": b.version,
            "rows": {"old": a.row_count, "new": b.row_count, "change": b.row_count - a.row_count},
            "quarantined": {"old": a.quarantined_count, "new": b.quarantined_count},
            **stats.diff_stats(a.stats, b.stats),
        }

    def read(self, ref: str = "latest", split: str | None = None, quarantine: bool = False,
             num_cpus: float | None = None):
        """A version as a lazy ``ray.data.Dataset``; optionally one split, or its quarantine.

        ``num_cpus`` sizes the read and filter tasks (fractions let them run beside trainers).
        """
        import pyarrow as pa
        import ray.data

        ensure_ray(self.config.ray, self.config.storage)
        manifest = self.show(ref)
        paths = self.store.file_paths(manifest, quarantine=quarantine)
        if not paths:
            return ray.data.from_arrow(pa.table({c: [] for c in manifest.schema}))
        tasks = {"num_cpus": num_cpus} if num_cpus else {}
        with parquet_reader_for(manifest.row_count + manifest.quarantined_count):
            dataset = ray.data.read_parquet(paths, filesystem=self.storage.fs, **tasks)
        if split is None:
            return dataset
        if split not in splits.SPLITS:
            raise RaysysError(f"unknown split '{split}': use one of {', '.join(splits.SPLITS)}")
        plan = self.split_plan(manifest.version)
        return map_frames(dataset, _keep_split, fn_kwargs={"plan": plan, "split": split}, **tasks)

    def sample(self, ref: str, split: str | None, rows: int, seed: int = 0) -> pd.DataFrame:
        """Up to ``rows`` rows of a version (or of one of its splits), drawn at random (seeded)."""
        frame = self.read(ref, split=split).to_pandas() if rows else pd.DataFrame()
        return frame.sample(n=min(rows, len(frame)), random_state=seed).reset_index(drop=True)

    # ------------------------------------------------------------------ splits

    def split_plan(self, ref: str = "latest") -> splits.SplitPlan:
        """The split plan of a version for the configured split (computed once, then cached)."""
        manifest = self.show(ref)
        cfg = self.config.data.split
        self._check_split_columns(manifest)
        key = hashlib.sha256(json.dumps(cfg.model_dump(), sort_keys=True).encode()).hexdigest()[:12]
        cached = (SPLIT_PLANS, self.name, f"{manifest.version}-{key}.json")
        if self.storage.exists(*cached):
            return splits.SplitPlan.from_dict(self.storage.read_json(*cached))
        low, high = _value_range(manifest, cfg.column if cfg.kind == "time" else None)
        plan = splits.compute_plan(cfg, self.config.data.label, low, high, self._pass_over(manifest))
        self.storage.write_json(plan.to_dict(), *cached)
        return plan

    def _check_split_columns(self, manifest: Manifest) -> None:
        cfg = self.config.data.split
        needed = list(cfg.key or []) + [c for c in [cfg.column or (self.config.data.label if cfg.kind == "stratified" else None)] if c]
        missing = [c for c in needed if c not in manifest.schema]
        if missing:
            raise RaysysError(f"data.split: column '{missing[0]}' is not in version {manifest.version}")
        if cfg.kind == "time" and manifest.schema[cfg.column] != "timestamp":
            raise RaysysError(f"data.split.column '{cfg.column}' must be a timestamp column for a time split")

    def _pass_over(self, manifest: Manifest) -> Callable[[Callable], pd.DataFrame]:
        def run(fn: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
            dataset = self.read(manifest.version)
            return map_frames(dataset, fn).to_pandas()

        return run

    def split_counts(self, ref: str = "latest") -> dict[str, int]:
        """Rows per split."""
        manifest = self.show(ref)
        plan = self.split_plan(manifest.version)
        labels = map_frames(self.read(manifest.version), _split_names, fn_kwargs={"plan": plan})
        counts = labels.to_pandas()[SPLIT_COLUMN].value_counts()
        return {name: int(counts.get(name, 0)) for name in splits.SPLITS}

    # ------------------------------------------------------------------ features

    def fit_features(self, ref: str = "latest") -> FeatureArtifact:
        """Fit preprocessing on the train split of a version and save it as an artifact."""
        manifest = self.show(ref)
        plan = features.plan_features(self.config.features, manifest.schema, self.config.data.label)
        train = self.read(manifest.version, split="train")
        with user_errors("features"):
            partials = map_frames(train, _fit_partial, fn_kwargs={"plan": plan}).to_pandas()
        merged: dict = {}
        for blob in partials["partial"]:
            part = pickle.loads(blob)
            merged = features.merge_partials(merged, part) if merged else part
        if not merged:
            raise RaysysError(f"version {manifest.version}: the train split is empty, nothing to fit")
        state = features.finalize(plan, merged)
        artifact = FeatureArtifact(state, self.name, manifest.version, self.split_plan(manifest.version).to_dict())
        self._save_features(artifact)
        return artifact

    def _save_features(self, artifact: FeatureArtifact) -> None:
        record = {"state": artifact.state.to_dict(), "dataset": artifact.dataset, "version": artifact.version, "split": artifact.split}
        self.storage.write_json(record, FEATURES, artifact.id, "state.json")

    def load_features(self, feature_id: str) -> FeatureArtifact:
        """A saved preprocessing artifact by id."""
        if not self.storage.exists(FEATURES, feature_id, "state.json"):
            raise NotFound(f"no preprocessing artifact '{feature_id}' under {self.storage.uri}/{FEATURES}")
        record = self.storage.read_json(FEATURES, feature_id, "state.json")
        return FeatureArtifact(features.FeatureState.from_dict(record["state"]), record["dataset"], record["version"], record["split"])

    def transform(self, artifact: FeatureArtifact, ref: str | None = None, split: str | None = None,
                  keep: list[str] | None = None, num_cpus: float | None = None):
        """Apply a fitted state with Ray Data: the same function the online path uses."""
        dataset = self.read(ref or artifact.version, split=split, num_cpus=num_cpus)
        tasks = {"num_cpus": num_cpus} if num_cpus else {}
        return map_frames(dataset, _transform, fn_kwargs={"state": artifact.state, "keep": keep or []}, **tasks)


class _Unrelated(DatasetStore):
    """The store as an append sees it when its rows make a version of their own (no parent files)."""

    def latest(self, name: str) -> Manifest | None:
        """No version to build on."""
        return None


def map_frames(dataset, fn, **kwargs):
    """``map_batches`` over pandas frames of a bounded size (memory stays flat per task)."""
    return dataset.map_batches(fn, batch_format="pandas", batch_size=BATCH_ROWS, **kwargs)


def distinct_values(dataset, column: str) -> list[Any]:
    """The distinct values of a column, deduplicated per block and then once more on the driver.

    Ray Data's ``unique`` (and ``mean``/``std``) run a hash shuffle whose aggregator actors
    cost 5-8 s even on a few hundred rows; a label's per-block values are few.
    """
    frames = map_frames(dataset.select_columns([column]), _drop_duplicates).to_pandas()
    return frames[column].drop_duplicates().tolist()


def mean_std(dataset, column: str) -> tuple[float | None, float | None]:
    """A numeric column's mean and sample standard deviation in one pass.

    Each block gives its count, mean and sum of squared deviations; the driver merges them
    (Chan et al.), which stays exact where a mean far from zero would cancel a sum of squares.
    """
    parts = map_frames(dataset.select_columns([column]), _moments, fn_kwargs={"column": column}).to_pandas()
    count, mean, squares = 0, 0.0, 0.0
    for n, block_mean, block_squares in parts[["count", "mean", "squares"]].itertuples(index=False):
        if n:
            delta, total = block_mean - mean, count + n
            mean += delta * n / total
            squares += block_squares + delta * delta * count * n / total
            count = total
    if count == 0:
        return None, None
    return mean, ((squares / (count - 1)) ** 0.5 if count > 1 else None)


def _drop_duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop_duplicates()


def _moments(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    values = frame[column].dropna().to_numpy(dtype=float)
    mean = float(values.mean()) if len(values) else 0.0
    return pd.DataFrame({"count": [len(values)], "mean": [mean], "squares": [float(((values - mean) ** 2).sum())]})


def _keep_split(frame: pd.DataFrame, plan: splits.SplitPlan, split: str) -> pd.DataFrame:
    return frame[splits.assign(frame, plan) == split]


def _split_names(frame: pd.DataFrame, plan: splits.SplitPlan) -> pd.DataFrame:
    return pd.DataFrame({SPLIT_COLUMN: splits.assign(frame, plan)})


def _fit_partial(frame: pd.DataFrame, plan: features.FeaturePlan) -> pd.DataFrame:
    return pd.DataFrame({"partial": [pickle.dumps(features.fit_partial(plan, frame))]})


def _transform(frame: pd.DataFrame, state: features.FeatureState, keep: list[str]) -> pd.DataFrame:
    out = features.transform(state, frame)
    for column in keep:  # a raw column that is also a feature output is kept beside it, never over it
        out[features.kept_name(column) if column in out else column] = frame[column].to_numpy()
    return out


def _value_range(manifest: Manifest, column: str | None) -> tuple[float, float]:
    if column is None:
        return 0.0, 1.0
    column_stats = manifest.stats.get(column, {})
    bounds = [column_stats.get("min"), column_stats.get("max")]
    if None in bounds:
        return 0.0, 1.0
    low, high = (pd.Timestamp(b).to_datetime64().astype("datetime64[us]").astype(np.int64) for b in bounds)
    return float(low), float(high) + 1.0
