"""The modeling layer's Python API: what ``System.models`` offers and the CLI calls."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from raysys.config import SystemConfig
from raysys.data.service import DataService, FeatureArtifact, distinct_values, map_frames, mean_std
from raysys.data.store import Manifest
from raysys.errors import ConfigError, RaysysError
from raysys.modeling import metrics as metric_fns
from raysys.modeling.artifacts import TrainSpec, encode_labels
from raysys.modeling.predict import LoadedModel, model_files, outputs_from_frame, predict_batch
from raysys.modeling.registry import ModelRegistry, ModelVersion, code_version
from raysys.modeling.tracking import list_runs, load_run, start_run
from raysys.runtime import ensure_ray, user_errors
from raysys.secrets import mask_config
from raysys.storage import Storage

CACHE_ROWS = 2_000_000


@dataclass
class TrainResult:
    """A trained, evaluated and registered model."""

    model: ModelVersion
    run_id: str
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    resumed_from_checkpoint: bool
    promotion: dict[str, Any] | None = None  # with no champion yet: whether this one became it, and why

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the CLI."""
        return {"model": self.model.name, "version": self.model.version, "run_id": self.run_id,
                "metrics": self.metrics, "epochs": len(self.history), "resumed_from_checkpoint": self.resumed_from_checkpoint,
                "promotion": self.promotion}


class ModelService:
    """Train, evaluate, cross-validate and register models from the config."""

    def __init__(self, config: SystemConfig, storage: Storage, data: DataService):
        self.config, self.storage, self.data = config, storage, data
        self._registry: ModelRegistry | None = None

    @property
    def name(self) -> str:
        """The registered model's name (the project name)."""
        return self.config.project.name

    @property
    def registry(self) -> ModelRegistry:
        """The model registry under the storage root."""
        if self._registry is None:
            self._registry = ModelRegistry(self.storage, self.config.registry.db_path)
        return self._registry

    # ------------------------------------------------------------------ training

    def train(self, ref: str = "latest", extra: dict[str, Any] | None = None,
              params: dict[str, Any] | None = None, tune_run: str | None = None,
              lineage: dict[str, Any] | None = None) -> TrainResult:
        """Fit features, train on Ray Train, evaluate on the test split, register the model.

        ``params`` overrides ``model.*`` / ``train.*`` settings (e.g. a search's best trial, in
        which case ``tune_run`` names the search in the model's lineage); ``lineage`` adds to the
        registered lineage (e.g. a retrain's trigger and parent versions).
        """
        manifest = self.data.show(ref)
        label, task = self._label_and_task()
        self._check_slices(manifest)  # before training, not after it
        ensure_ray(self.config.ray, self.config.storage)
        artifact = self.data.fit_features(manifest.version)
        from raysys.modeling.train import run_trainer  # Lightning: only where training happens
        from raysys.modeling.tune import apply_params

        spec = apply_params(self.spec_for(artifact, label, task, extra or {}), params or {})
        config = self.config.model_dump(mode="json", by_alias=True)
        with start_run(self.storage, self.config.tracking, self.config.project.name, "train", config,
                       dataset_version=manifest.version) as run:
            with user_errors("train"):
                output = run_trainer(spec, self._train_datasets(artifact, label, manifest.row_count), self.config.train,
                                     self.storage.path("train"), run.run_id, self.storage.fs)
            for row in output.history:
                run.log(row, step=row.get("step"))
            files = model_files(spec, artifact.state, output.weights)
            evaluation = self.evaluate_files(files, manifest.version, "test")
            files.update(self._importance(files, manifest.version))
            version = self.registry.register(
                self.name, files, metrics=evaluation["metrics"],
                lineage={**self._lineage(manifest, artifact, run.run_id, tune_run), **(lineage or {})}, params={"model": spec.model, "train": spec.train},
                run_id=run.run_id,
            )
            run.reference_model(self.name, version.version, version.uri)
            run.summary({f"test_{k}": v for k, v in evaluation["metrics"].items() if isinstance(v, (int, float))})
        return TrainResult(version, run.run_id, evaluation, output.history, output.resumed_from_checkpoint,
                           self._promote_if_first(version, evaluation, task))

    def _importance(self, files: dict[str, bytes], ref: str) -> dict[str, bytes]:
        """``importance.json``: permutation importance on the validation split (none if off or empty)."""
        from raysys.modeling.explain import IMPORTANCE, permutation_importance

        cfg = self.config.explain
        if not cfg.permutation_repeats:
            return {}
        frame = self.data.read(ref, split="val").limit(cfg.importance_rows).to_pandas()
        if frame.empty:
            return {}
        result = permutation_importance(LoadedModel(files), frame, cfg.permutation_repeats, self.config.train.seed)
        return {IMPORTANCE: json.dumps({"split": "val", "dataset_version": ref, **result}, indent=2).encode()}

    def _promote_if_first(self, version: ModelVersion, evaluation: dict[str, Any], task: str) -> dict[str, Any] | None:
        """With no champion yet (and ``train.promote_first``), make ``version`` the champion if it beats
        the trivial baseline (:mod:`raysys.modeling.promotion`); None when the rule does not apply."""
        from raysys.modeling.promotion import beats_baseline

        if not self.config.train.promote_first or "champion" in self.registry.aliases(self.name):
            return None
        better, why = beats_baseline(task, evaluation)
        if better and self.registry.set_alias(self.name, "champion", version.version, only_if_unset=True,
                                              actor="raysys (train.promote_first)",
                                              reason=f"first champion: {why}") is None:
            return None  # another run made its model the champion meanwhile
        return {"alias": "champion", "version": version.version, "promoted": better, "reason": why}

    def spec_for(self, artifact: FeatureArtifact, label: str, task: str, extra: dict[str, Any]) -> TrainSpec:
        """The training spec: shapes from the features, classes or target scale from train."""
        from raysys.modeling.models import build_model, model_inputs, output_size

        train = self.data.read(artifact.version, split="train").select_columns([label])
        classes, mean, std = None, 0.0, 1.0
        if task == "regression":
            mean, std = mean_std(train, label)
            mean, std = mean or 0.0, std or 1.0
        else:
            classes = sorted(distinct_values(train, label), key=str)
            if len(classes) < 2:
                raise RaysysError(f"the train split of {artifact.version} has {len(classes)} class(es) {classes}: "
                                  f"a {task} model needs at least two")
        inputs = model_inputs(artifact.state)
        build_model(self.config.model, inputs, output_size(task, len(classes) if classes else None))  # fail fast
        return TrainSpec(model=self.config.model.model_dump(), train=self.config.train.model_dump(),
                         inputs={"numeric": inputs.numeric, "categorical": inputs.categorical},
                         task=task, label=label, classes=classes, target_mean=mean, target_std=std, extra=extra)

    def _train_datasets(self, artifact: FeatureArtifact, label: str, rows: int) -> dict[str, Any]:
        """The transformed splits, streamed; small ones are cached in the object store once.

        Caching (``materialize``) keeps blocks in Ray's object store, never in the driver, and
        saves re-running the read → split → transform pipeline every epoch.
        """
        from raysys.modeling.train import DATA_TASK_CPUS

        datasets = {split: self.data.transform(artifact, split=split, keep=[label], num_cpus=DATA_TASK_CPUS)
                    for split in ("train", "val")}
        if rows <= CACHE_ROWS:
            datasets = {split: dataset.materialize() for split, dataset in datasets.items()}
        return datasets

    def _label_and_task(self) -> tuple[str, str]:
        data = self.config.data
        if not data.label or not data.task:
            raise RaysysError("data.label and data.task must be set to train a model")
        return data.label, data.task

    def _lineage(self, manifest: Manifest, artifact: FeatureArtifact, run_id: str,
                 tune_run: str | None) -> dict[str, Any]:
        config = json.dumps(mask_config(self.config), sort_keys=True)  # a hash must not let weak passwords be guessed
        return {"dataset": manifest.name, "dataset_version": manifest.version, "features": artifact.id,
                "config_hash": hashlib.sha256(config.encode()).hexdigest()[:16], "code_version": code_version(),
                "run_id": run_id, **({"tune_run": tune_run} if tune_run else {})}

    def tune(self, ref: str = "latest") -> dict[str, Any]:
        """Search the configured space with Ray Tune, then retrain the best trial and register it."""
        from raysys.modeling.tune import run_search

        manifest = self.data.show(ref)
        label, task = self._label_and_task()
        self._check_slices(manifest)  # before training, not after it
        ensure_ray(self.config.ray, self.config.storage)
        artifact = self.data.fit_features(manifest.version)
        spec = self.spec_for(artifact, label, task, {})
        config = self.config.model_dump(mode="json", by_alias=True)
        with start_run(self.storage, self.config.tracking, self.config.project.name, "tune", config,
                       dataset_version=manifest.version) as run:
            with user_errors("tune"):
                search = run_search(self.config.tune, spec, self._train_datasets(artifact, label, manifest.row_count),
                                    self.storage.path("tune"), run.run_id)
            for index, trial in enumerate(search["trials"]):
                run.log({**trial["metrics"], **{f"param/{k}": v for k, v in trial["params"].items()
                                                 if isinstance(v, (int, float))}}, step=index)
            run.summary({"best_" + k: v for k, v in search["best_metrics"].items()})
        trained = self.train(manifest.version, params=search["best_params"], tune_run=run.run_id)
        return {"run_id": run.run_id, **search, "model": trained.to_dict()}

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, model: str = "latest", ref: str | None = None, split: str = "test") -> dict[str, Any]:
        """Metrics, the trivial baseline and slice metrics of a registered model on a split."""
        version = self.registry.get(self.name, model)
        dataset_version = ref or version.lineage.get("dataset_version", "latest")
        self._check_slices(self.data.show(dataset_version))
        ensure_ray(self.config.ray, self.config.storage)
        files = self.registry.load_files(version)
        with start_run(self.storage, self.config.tracking, self.config.project.name, "evaluate",
                       {"model": version.version, "split": split}, dataset_version=dataset_version) as run:
            result = self.evaluate_files(files, dataset_version, split)
            run.reference_model(self.name, version.version, version.uri)
            run.summary({k: v for k, v in result["metrics"].items() if isinstance(v, (int, float))})
        return {"model": version.version, "run_id": run.run_id, **result}

    def evaluate_files(self, files: dict[str, bytes], ref: str, split: str) -> dict[str, Any]:
        """Evaluate model files on one split of a dataset version (Ray Data batch inference)."""
        from raysys.modeling.train import DATA_TASK_CPUS

        model = LoadedModel(files)
        spec, slices = model.spec, list(self.config.evaluate.slices)
        artifact = FeatureArtifact(model.state, self.data.name, ref, {})
        keep = list(dict.fromkeys([spec.label, *slices]))
        dataset = self.data.transform(artifact, ref=ref, split=split, keep=keep)
        predictions = map_frames(dataset, predict_batch, fn_kwargs={"files": files, "keep": keep},
                                 num_cpus=DATA_TASK_CPUS)
        frame = predictions.to_pandas()
        if frame.empty:
            raise RaysysError(f"the {split} split of {ref} is empty: nothing to evaluate")
        return score_frame(frame, spec, slices, self._train_labels(artifact, spec))

    def cross_validate(self, ref: str = "latest", folds: int | None = None) -> dict[str, Any]:
        """k-fold cross-validation of the configured model, folds in parallel on Ray."""
        from raysys.modeling.crossval import cross_validate

        ensure_ray(self.config.ray, self.config.storage)
        manifest = self.data.show(ref)
        label, task = self._label_and_task()
        frame = self.data.read(manifest.version).to_pandas()
        with start_run(self.storage, self.config.tracking, self.config.project.name, "crossval",
                       self.config.model_dump(mode="json", by_alias=True), dataset_version=manifest.version) as run:
            with user_errors("cross-validation"):
                result = cross_validate(frame, folds=folds or self.config.evaluate.folds, seed=self.config.train.seed,
                                        label=label, task=task, features_cfg=self.config.features,
                                        column_types=manifest.schema, model_cfg=self.config.model,
                                        train_cfg=self.config.train)
            for index, fold in enumerate(result["per_fold"]):
                run.log({k: v for k, v in fold.items() if isinstance(v, (int, float))}, step=index)
            run.summary({f"{k}_mean": v["mean"] for k, v in result["summary"].items() if v["mean"] is not None})
        return {"run_id": run.run_id, "dataset_version": manifest.version, **result}

    def _check_slices(self, manifest: Manifest) -> None:
        """A ConfigError naming the ``evaluate.slices`` columns a dataset version does not have."""
        missing = [c for c in self.config.evaluate.slices if c not in manifest.schema]
        if missing:
            columns = list(manifest.schema)
            shown = ", ".join(columns[:20]) + (f", … ({len(columns)} in all)" if len(columns) > 20 else "")
            verb = "is not a column" if len(missing) == 1 else "are not columns"
            raise ConfigError(f"evaluate.slices: {', '.join(map(repr, missing))} {verb} of dataset version "
                              f"{manifest.version} (its columns: {shown})")

    def _train_labels(self, artifact: FeatureArtifact, spec: TrainSpec) -> np.ndarray:
        train = self.data.read(artifact.version, split="train").select_columns([spec.label]).to_pandas()
        return _encoded(train[spec.label], spec)

    # ------------------------------------------------------------------ registry

    def list(self) -> list[ModelVersion]:
        """Every registered version of this project's model."""
        return self.registry.list_versions(self.name)

    def show(self, ref: str) -> ModelVersion:
        """One version by number, ``latest`` or alias."""
        return self.registry.get(self.name, ref)

    def promote(self, ref: str, alias: str, actor: str, reason: str):
        """Move an alias (champion, challenger, …) to a version."""
        version = self.registry.get(self.name, ref)
        return self.registry.set_alias(self.name, alias, version.version, actor=actor, reason=reason)

    def importance(self, ref: str) -> dict[str, Any] | None:
        """A version's permutation importance (``importance.json``, computed at training); None if it has none."""
        from raysys.modeling.explain import IMPORTANCE
        from raysys.modeling.registry import read_artifacts

        version = self.registry.get(self.name, ref)
        if IMPORTANCE not in version.files:
            return None
        files = read_artifacts(self.storage, self.name, version.version, {IMPORTANCE: version.files[IMPORTANCE]})
        return json.loads(files[IMPORTANCE])  # its checksum verified

    def load(self, ref: str = "champion") -> LoadedModel:
        """A registered model ready to predict on raw rows."""
        return LoadedModel(self.registry.load_files(self.registry.get(self.name, ref)))

    def runs(self) -> list[dict[str, Any]]:
        """Local run records, newest first."""
        return list_runs(self.storage)

    def run(self, run_id: str) -> dict[str, Any]:
        """One run record with its metric history."""
        return load_run(self.storage, run_id)


def _encoded(labels: pd.Series, spec: TrainSpec) -> np.ndarray:
    return np.asarray(encode_labels(labels, spec.classes))


def score_frame(frame: pd.DataFrame, spec: TrainSpec, slices: list[str], train_labels: np.ndarray) -> dict[str, Any]:
    """Metrics of predictions against labels, beside the trivial baseline, plus slices."""
    y = _encoded(frame[spec.label], spec)
    output = outputs_from_frame(frame)
    baseline = metric_fns.baseline_output(spec.task, train_labels, len(y), spec.num_classes)
    result = {
        "split_rows": len(y),
        "metrics": metric_fns.task_metrics(spec.task, y, output, spec.num_classes),
        "baseline": metric_fns.task_metrics(spec.task, y, baseline, spec.num_classes),
    }
    if slices:
        result["slices"] = metric_fns.slice_metrics(frame, y, output, slices, spec.task, spec.num_classes)
    return result
