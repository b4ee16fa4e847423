"""A trained model with its preprocessing, loaded from registry files, ready to predict.

One class serves evaluation (Ray Data ``map_batches``), batch inference and online serving:
raw rows in, the fitted feature transform, the network, outputs out.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from raysys.data import features
from raysys.modeling.artifacts import TrainSpec, bytes_to_state_dict

WEIGHTS = "model.safetensors"
SPEC = "model.json"
FEATURES = "features.json"
OUTPUT = "_output"


def model_files(spec: TrainSpec, state: features.FeatureState, weights: bytes) -> dict[str, bytes]:
    """The files a registered model consists of (no pickle anywhere)."""
    return {
        WEIGHTS: weights,
        SPEC: json.dumps(asdict(spec), indent=2, default=str).encode(),
        FEATURES: json.dumps(state.to_dict(), indent=2).encode(),
    }


class LoadedModel:
    """Raw rows → features → network → outputs."""

    def __init__(self, files: dict[str, bytes]):
        from raysys.modeling.models import ModelInputs, build_model, output_size

        self.spec = TrainSpec(**json.loads(files[SPEC]))
        self.state = features.FeatureState.from_dict(json.loads(files[FEATURES]))
        self.inputs = ModelInputs(**self.spec.inputs)
        from raysys.config import ModelConfig

        self.network = build_model(ModelConfig(**self.spec.model), self.inputs, output_size(self.spec.task, self.spec.num_classes))
        self.network.load_state_dict(bytes_to_state_dict(files[WEIGHTS]))
        self.network.eval()

    @property
    def signature(self) -> dict[str, str]:
        """The raw input columns the model reads and their types (the request schema)."""
        return self.state.inputs

    @property
    def task(self) -> str:
        """binary, multiclass or regression."""
        return self.spec.task

    def predict_features(self, frame: pd.DataFrame) -> np.ndarray:
        """Outputs for already-transformed feature rows."""
        import torch

        from raysys.modeling.models import frame_to_tensors

        x_num, x_cat = frame_to_tensors(frame, self.inputs)
        with torch.no_grad():
            raw = self.network(x_num, x_cat)
        return to_output(raw, self.spec)

    def predict(self, raw: features.Columns) -> np.ndarray:
        """Outputs for raw rows (a frame, or column → values): P(class 1), class probabilities or values."""
        import torch

        from raysys.modeling.models import array_to_tensors

        values = features.transform_values(self.state, raw)
        x_num, x_cat = array_to_tensors(values, self.state.output_columns, self.inputs)
        with torch.no_grad():
            return to_output(self.network(x_num, x_cat), self.spec)

    def labels(self, output: np.ndarray) -> np.ndarray:
        """The predicted class labels (or values, for regression)."""
        if self.task == "regression":
            return output
        classes = np.asarray(self.spec.classes, dtype=object)
        index = (output >= 0.5).astype(int) if self.task == "binary" else output.argmax(axis=1)
        return classes[index]


def to_output(raw: Any, spec: TrainSpec) -> np.ndarray:
    """Network outputs (logits) → probabilities or de-standardized values."""
    import torch

    if spec.task == "binary":
        return torch.sigmoid(raw.reshape(-1)).numpy().astype(np.float64)
    if spec.task == "multiclass":
        return torch.softmax(raw, dim=1).numpy().astype(np.float64)
    return raw.reshape(-1).numpy().astype(np.float64) * spec.target_std + spec.target_mean


class BatchPredictor:
    """A Ray Data callable class: loads the model once per actor, predicts each batch."""

    def __init__(self, files: dict[str, bytes], keep: list[str]):
        self.model, self.keep = LoadedModel(files), keep

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        output = self.model.predict_features(frame)
        out = pd.DataFrame({c: frame[features.kept_name(c) if features.kept_name(c) in frame else c].to_numpy()
                            for c in self.keep})
        if output.ndim == 1:
            out[OUTPUT] = output
        else:
            for index in range(output.shape[1]):
                out[f"{OUTPUT}_{index}"] = output[:, index]
        return out


def predict_batch(frame: pd.DataFrame, files: dict[str, bytes], keep: list[str]) -> pd.DataFrame:
    """A Ray Data task function: the model from its files, then one batch (a :class:`BatchPredictor` call)."""
    return BatchPredictor(files, keep)(frame)


def outputs_from_frame(frame: pd.DataFrame) -> np.ndarray:
    """Collect the output column(s) a BatchPredictor wrote back into an array."""
    if OUTPUT in frame.columns:
        return frame[OUTPUT].to_numpy(dtype=np.float64)
    columns = sorted((c for c in frame.columns if c.startswith(f"{OUTPUT}_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    return frame[columns].to_numpy(dtype=np.float64)
