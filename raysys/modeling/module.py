"""The Lightning side of training: a LightningModule over any registered model, and helpers.

:class:`TabularModule` takes plain dicts (``ModelConfig``/``TrainConfig`` dumps, ``ModelInputs``
as a dict) so that ``save_hyperparameters()`` records them and Ray can pickle the module.
Batches are dicts ``{"x_num", "x_cat", "y"}`` made by :func:`batch_from_frame`, the function
the Ray Train loop applies to each pandas batch of its dataset shard.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import nn

from raysys.config import ModelConfig, TrainConfig
from raysys.errors import RaysysError
from raysys.modeling.models import ModelInputs, build_model, frame_to_tensors, output_size

TASKS = ("binary", "multiclass", "regression")


def seed_everything(seed: int) -> int:
    """Seed Python, numpy and torch (via Lightning) and ask torch for deterministic kernels."""
    L.seed_everything(seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return seed


def batch_from_frame(
    frame: pd.DataFrame, inputs: ModelInputs, label: str, task: str
) -> dict[str, torch.Tensor]:
    """``{"x_num", "x_cat", "y"}`` from a frame of features plus the label column.

    ``y`` is float32 for binary (0/1) and regression, int64 class codes for multiclass.
    """
    inputs = ModelInputs.from_dict(inputs)
    x_num, x_cat = frame_to_tensors(frame, inputs)
    if label not in frame.columns:
        raise RaysysError(f"model inputs: missing label column {label!r}")
    try:
        y = frame[label].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as error:
        raise RaysysError(f"label {label!r}: not numeric ({error})") from None
    if not np.isfinite(y).all():
        raise RaysysError(f"label {label!r}: {int((~np.isfinite(y)).sum())} null or non-finite value(s)")
    if task == "multiclass":
        if (y != np.round(y)).any() or (y < 0).any():
            raise RaysysError(f"label {label!r}: multiclass labels must be class codes 0..k-1")
        target = torch.from_numpy(y.astype(np.int64))
    elif task in ("binary", "regression"):
        target = torch.from_numpy(y.astype(np.float32))
    else:
        raise RaysysError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    return {"x_num": x_num, "x_cat": x_cat, "y": target}


def make_callbacks(train_cfg: TrainConfig | dict[str, Any]) -> list[Callback]:
    """Lightning callbacks for a training config: EarlyStopping on ``val_loss`` when set."""
    cfg = TrainConfig.model_validate(train_cfg)
    callbacks: list[Callback] = []
    if cfg.early_stopping is not None:
        callbacks.append(EarlyStopping(  # checked after validation: train.max_steps may end mid-epoch
            monitor="val_loss", mode="min", patience=cfg.early_stopping.patience,
            min_delta=cfg.early_stopping.min_delta, check_on_train_epoch_end=False,
        ))
    return callbacks


class TabularModule(L.LightningModule):
    """A registered model with the loss, metrics and optimiser of a task.

    Regression trains on the standardized target ``(y - target_mean) / target_std`` (statistics
    of the training data); :meth:`predict_output` undoes it.
    """

    def __init__(
        self,
        model_cfg: dict[str, Any],
        train_cfg: dict[str, Any],
        inputs: dict[str, Any],
        task: str,
        num_classes: int | None = None,
        target_mean: float = 0.0,
        target_std: float = 1.0,
    ):
        super().__init__()
        if task not in TASKS:
            raise RaysysError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
        self.save_hyperparameters()
        self.model_cfg = ModelConfig.model_validate(model_cfg)
        self.train_cfg = TrainConfig.model_validate(train_cfg)
        self.inputs = ModelInputs.from_dict(inputs)
        self.task = task
        self.num_classes = num_classes
        self.target_mean = float(target_mean)
        std = float(target_std)
        self.target_std = std if np.isfinite(std) and std > 0 else 1.0
        self.model = build_model(self.model_cfg, self.inputs, output_size(task, num_classes))
        self.loss_fn: nn.Module = {
            "binary": nn.BCEWithLogitsLoss, "multiclass": nn.CrossEntropyLoss,
            "regression": nn.MSELoss,
        }[task]()

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        """Raw model output ``[n, output_size]``."""
        return self.model(x_num, x_cat)

    # ----------------------------------------------------------------------- training

    def _output_and_target(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self(batch["x_num"], batch["x_cat"])
        y = batch["y"]
        if self.task == "multiclass":
            return out, y.long()
        out = out.squeeze(-1)
        if self.task == "regression":
            return out, (y.float() - self.target_mean) / self.target_std
        return out, y.float()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out, target = self._output_and_target(batch)
        loss = self.loss_fn(out, target)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=len(target))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out, target = self._output_and_target(batch)
        loss = self.loss_fn(out, target)
        n = len(target)
        self.log("val_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        if self.task != "regression":
            predicted = out.argmax(dim=1) if self.task == "multiclass" else (out > 0).float()
            accuracy = (predicted == target).float().mean()
            self.log("val_accuracy", accuracy, on_step=False, on_epoch=True, sync_dist=True,
                     batch_size=n)
        return loss

    def configure_optimizers(self) -> Any:
        cfg = self.train_cfg
        optimizer = torch.optim.AdamW(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.lr_schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        elif cfg.lr_schedule == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(
                optimizer, step_size=max(1, cfg.epochs // 3), gamma=0.5)
        else:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ----------------------------------------------------------------------- inference

    def predict_output(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> np.ndarray:
        """Predictions in eval mode without gradients, as float64.

        Binary: P(class 1), shape ``(n,)``; multiclass: probabilities ``(n, k)``; regression:
        predictions in the target's units, shape ``(n,)``.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self(x_num.to(self.device), x_cat.to(self.device)).float()
                if self.task == "binary":
                    result = torch.sigmoid(out.squeeze(-1))
                elif self.task == "multiclass":
                    result = torch.softmax(out, dim=1)
                else:
                    result = out.squeeze(-1).double() * self.target_std + self.target_mean
        finally:
            self.train(was_training)
        return result.cpu().numpy().astype(np.float64)

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """:meth:`predict_output` on the feature columns of a frame (e.g. ``transform`` output)."""
        return self.predict_output(*frame_to_tensors(frame, self.inputs))
