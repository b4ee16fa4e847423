"""k-fold cross-validation: every fold fits its own preprocessing and model, in parallel on Ray.

Each fold is one Ray task running plain Lightning on its share of the rows (held once in the
object store), with the same features, model and training code as ``raysys train``. Meant for
data that fits in memory (up to ``MAX_ROWS`` rows); bigger tables use a train/val/test split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from raysys.config import FeaturesConfig, ModelConfig, TrainConfig
from raysys.errors import RaysysError
from raysys.modeling import metrics as metric_fns

MAX_ROWS = 1_000_000
VAL_SHARE = 0.1


def fit_fold(frame: pd.DataFrame, train_idx: np.ndarray, test_idx: np.ndarray, *, features_cfg: dict,
             column_types: dict[str, str], label: str, task: str, model_cfg: dict, train_cfg: dict) -> dict[str, Any]:
    """Fit features and a model on one fold's training rows; metrics on its held-out rows."""
    import lightning as L
    import torch

    from raysys.data import features
    from raysys.modeling.artifacts import encode_labels
    from raysys.modeling.models import model_inputs
    from raysys.modeling.module import (
        TabularModule,
        batch_from_frame,
        make_callbacks,
        seed_everything,
    )

    seed_everything(train_cfg["seed"])
    train, test = frame.iloc[train_idx], frame.iloc[test_idx]
    fit_part, val_part = _hold_out(train, train_cfg["seed"])
    plan = features.plan_features(FeaturesConfig(**features_cfg), column_types, label)
    state = features.fit(plan, fit_part)
    classes = None if task == "regression" else sorted(fit_part[label].unique().tolist(), key=str)
    mean, std = (float(fit_part[label].mean()), float(fit_part[label].std() or 1.0)) if classes is None else (0.0, 1.0)
    inputs = model_inputs(state)

    def loader(rows: pd.DataFrame, shuffle: bool):
        out = features.transform(state, rows)
        out[label] = encode_labels(rows[label], classes)
        batch = batch_from_frame(out, inputs, label, task)
        tensors = torch.utils.data.TensorDataset(batch["x_num"], batch["x_cat"], batch["y"])
        generator = torch.Generator().manual_seed(train_cfg["seed"])
        return torch.utils.data.DataLoader(tensors, batch_size=train_cfg["batch_size"], shuffle=shuffle,
                                           generator=generator, collate_fn=_as_dict)

    module = TabularModule(model_cfg, train_cfg, inputs.to_dict(), task, len(classes) if classes else None, mean, std)
    trainer = L.Trainer(max_epochs=train_cfg["epochs"], accelerator="cpu", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        deterministic=True, callbacks=make_callbacks(train_cfg), num_sanity_val_steps=0)
    trainer.fit(module, loader(fit_part, True), loader(val_part, False))
    output = module.predict_frame(features.transform(state, test))
    y = np.asarray(encode_labels(test[label], classes))
    return metric_fns.task_metrics(task, y, output, len(classes) if classes else None)


def _hold_out(train: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(train))
    cut = max(1, int(len(train) * VAL_SHARE))
    return train.iloc[order[cut:]], train.iloc[order[:cut]]


def _as_dict(rows: list) -> dict[str, Any]:
    import torch

    x_num, x_cat, y = (torch.stack(column) for column in zip(*rows))
    return {"x_num": x_num, "x_cat": x_cat, "y": y}


def cross_validate(frame: pd.DataFrame, *, folds: int, seed: int, label: str, task: str, features_cfg: FeaturesConfig,
                   column_types: dict[str, str], model_cfg: ModelConfig, train_cfg: TrainConfig) -> dict[str, Any]:
    """Run every fold as a Ray task (as many at once as the cluster fits) and summarize."""
    import ray

    if len(frame) > MAX_ROWS:
        raise RaysysError(f"cross-validation holds the table in memory: {len(frame):,} rows is above {MAX_ROWS:,}")
    stratify = frame[label].to_numpy() if task != "regression" else None
    pairs = metric_fns.kfold_indices(len(frame), folds, seed, stratify)
    shared = ray.put(frame)
    task_fn = ray.remote(num_cpus=1)(fit_fold)
    kwargs = {"features_cfg": features_cfg.model_dump(), "column_types": column_types, "label": label, "task": task,
              "model_cfg": model_cfg.model_dump(), "train_cfg": train_cfg.model_dump()}
    per_fold = ray.get([task_fn.remote(shared, train_idx, test_idx, **kwargs) for train_idx, test_idx in pairs])
    return {"folds": folds, "per_fold": per_fold, "summary": metric_fns.summarize_folds(per_fold)}
