"""Model architectures for tabular features, in plain torch (no Ray, no Lightning).

A model reads the columns of ``features.transform`` output as two tensors, built by
:func:`frame_to_tensors` the same way for training, evaluation and serving:

* ``x_num`` float32 ``[n, len(inputs.numeric)]``: numeric features and one-hot columns;
* ``x_cat`` int64 ``[n, len(inputs.categorical)]``: codes of ordinal-encoded categoricals, each
  in ``0..cardinality - 1`` where the last code means "other / unseen".

Every model is an ``nn.Module`` built as ``cls(cfg: ModelConfig, inputs: ModelInputs,
output_size: int)`` whose ``forward(x_num, x_cat)`` returns raw outputs ``[n, output_size]``
(logits for classification, a standardized value for regression).

Adding a model type is one class and one decorator; ``model.type: <name>`` in the config then
selects it::

    @register_model("wide")
    class WideModel(nn.Module):
        def __init__(self, cfg: ModelConfig, inputs: ModelInputs, output_size: int):
            super().__init__()
            self.encoder = InputEncoder(inputs, cfg.embedding_dim)
            self.head = nn.Linear(self.encoder.output_dim, output_size)

        def forward(self, x_num, x_cat):
            return self.head(self.encoder(x_num, x_cat))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from raysys.config import ModelConfig
from raysys.data.features import FeatureState
from raysys.errors import ConfigError, RaysysError

MODEL_TYPES: dict[str, type[nn.Module]] = {}


@dataclass
class ModelInputs:
    """Which feature columns a model reads, and how."""

    numeric: list[str] = field(default_factory=list)
    """Feature columns fed as floats (numeric features and one-hot columns)."""
    categorical: dict[str, int] = field(default_factory=dict)
    """Ordinal-encoded columns and their cardinality (``len(categories) + 1``)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, e.g. for ``save_hyperparameters`` or a model card."""
        return {"numeric": list(self.numeric), "categorical": dict(self.categorical)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | ModelInputs) -> ModelInputs:
        if isinstance(data, ModelInputs):
            return data
        return cls(numeric=[str(c) for c in data.get("numeric", [])],
                   categorical={str(k): int(v) for k, v in data.get("categorical", {}).items()})

    @property
    def columns(self) -> list[str]:
        """All feature columns a model reads: numeric ones, then categorical ones."""
        return [*self.numeric, *self.categorical]


def model_inputs(state: FeatureState) -> ModelInputs:
    """Derive a model's inputs from a fitted feature state (one-hot columns are numeric)."""
    categorical = {
        name: len(cat["categories"]) + 1
        for name, cat in state.categorical.items() if cat["encode"] == "ordinal"
    }
    numeric = [c for c in state.output_columns if c not in categorical]
    return ModelInputs(numeric=numeric, categorical=categorical)


def output_size(task: str, num_classes: int | None = None) -> int:
    """Width of a model's output: 1 for binary and regression, ``num_classes`` for multiclass."""
    if task in ("binary", "regression"):
        return 1
    if task == "multiclass":
        if num_classes is None or num_classes < 2:
            raise RaysysError(f"multiclass task needs num_classes >= 2, got {num_classes}")
        return int(num_classes)
    raise RaysysError(f"unknown task {task!r} (known: binary, multiclass, regression)")


# --------------------------------------------------------------------------- frames to tensors


def frame_to_tensors(frame: pd.DataFrame, inputs: ModelInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_num float32 [n, len(numeric)], x_cat int64 [n, len(categorical)])`` from a frame.

    Each row is converted on its own, so a one-row frame gives exactly that row of a batch.
    Categorical codes outside ``0..cardinality - 1`` (or null) map to the last, "other", code.
    """
    _check_columns(frame.columns, inputs)
    try:
        num, cat = (frame[columns].to_numpy(dtype=dtype, na_value=np.nan, copy=True) if columns
                    else np.empty((len(frame), 0), dtype=dtype)
                    for columns, dtype in ((inputs.numeric, np.float32), (list(inputs.categorical), np.float64)))
    except (TypeError, ValueError) as error:
        raise RaysysError(f"model inputs: feature columns must be numeric ({error})") from None
    return _tensors(num, cat, inputs)


def array_to_tensors(values: np.ndarray, columns: list[str], inputs: ModelInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`frame_to_tensors` for a feature array whose columns are ``columns`` (no frame)."""
    _check_columns(columns, inputs)
    position = {c: i for i, c in enumerate(columns)}
    num = values[:, [position[c] for c in inputs.numeric]].astype(np.float32)
    cat = values[:, [position[c] for c in inputs.categorical]].astype(np.float64)
    return _tensors(num, cat, inputs)


def _check_columns(columns: Any, inputs: ModelInputs) -> None:
    missing = [c for c in inputs.columns if c not in columns]
    if missing:
        raise RaysysError(f"model inputs: missing feature column(s): {', '.join(map(repr, missing))}")


def _tensors(num: np.ndarray, cat: np.ndarray, inputs: ModelInputs) -> tuple[torch.Tensor, torch.Tensor]:
    cardinality = np.array(list(inputs.categorical.values()), dtype=np.int64)
    bad = ~np.isfinite(cat) | (cat < 0) | (cat > cardinality - 1)
    codes = np.where(bad, cardinality - 1, np.nan_to_num(cat)).astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(num)), torch.from_numpy(codes)


# --------------------------------------------------------------------------- registry


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a model available as ``model.type: <name>``."""

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        known = MODEL_TYPES.get(name)
        if known is not None and _qualname(known) != _qualname(cls):
            raise RaysysError(f"model type {name!r} is already registered by {_qualname(known)}")
        MODEL_TYPES[name] = cls
        return cls

    return decorate


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def build_model(cfg: ModelConfig, inputs: ModelInputs, output_size: int) -> nn.Module:
    """Instantiate the registered model ``cfg.type``."""
    cls = MODEL_TYPES.get(cfg.type)
    if cls is None:
        known = ", ".join(MODEL_TYPES)
        raise ConfigError(f"model.type: unknown model type {cfg.type!r} (known: {known})")
    return cls(cfg, inputs, output_size)


# --------------------------------------------------------------------------- building blocks


class InputEncoder(nn.Module):
    """An embedding per categorical input, concatenated after the numeric inputs.

    Embedding size is ``min(embedding_dim, cardinality)``; ``output_dim`` is the total width.
    """

    def __init__(self, inputs: ModelInputs, embedding_dim: int):
        super().__init__()
        self.num_numeric = len(inputs.numeric)
        self.embeddings = nn.ModuleList(
            nn.Embedding(card, min(embedding_dim, card)) for card in inputs.categorical.values()
        )
        self.output_dim = self.num_numeric + sum(e.embedding_dim for e in self.embeddings)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        if not self.embeddings:
            return x_num
        parts = [x_num, *(emb(x_cat[:, j]) for j, emb in enumerate(self.embeddings))]
        return torch.cat(parts, dim=1)


@register_model("mlp")
class TabularMLP(nn.Module):
    """Embeddings + numeric inputs, then Linear→ReLU→Dropout per ``hidden`` width, a Linear head."""

    def __init__(self, cfg: ModelConfig, inputs: ModelInputs, output_size: int):
        super().__init__()
        self.encoder = InputEncoder(inputs, cfg.embedding_dim)
        layers: list[nn.Module] = []
        width = self.encoder.output_dim
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, output_size)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.encoder(x_num, x_cat)))


@register_model("linear")
class TabularLinear(nn.Module):
    """Embeddings + numeric inputs straight into a Linear head: a (generalised) linear baseline."""

    def __init__(self, cfg: ModelConfig, inputs: ModelInputs, output_size: int):
        super().__init__()
        self.encoder = InputEncoder(inputs, cfg.embedding_dim)
        self.head = nn.Linear(self.encoder.output_dim, output_size)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x_num, x_cat))
