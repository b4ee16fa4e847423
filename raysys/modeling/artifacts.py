"""What a trained model is made of, as plain data: the spec, label codes, safetensors weights.

Training writes these and every predictor reads them, so this module imports neither
Lightning nor Ray: a serving replica that loads a model imports torch and nothing heavier
(``benchmarks/README.md``, "Replica imports").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from raysys.errors import RaysysError

if TYPE_CHECKING:
    import torch


@dataclass
class TrainSpec:
    """Everything a training worker needs, as plain data (also saved beside a model's weights)."""

    model: dict[str, Any]
    train: dict[str, Any]
    inputs: dict[str, Any]
    task: str
    label: str
    classes: list[Any] | None
    target_mean: float = 0.0
    target_std: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int | None:
        """Number of classes for classification tasks."""
        return len(self.classes) if self.classes is not None else None


def encode_labels(labels: pd.Series, classes: list[Any] | None) -> np.ndarray | pd.Series:
    """Class labels as indices 0..k-1 (regression targets pass through as floats)."""
    if classes is None:
        return labels.astype("float64")
    codes = pd.Index(classes).get_indexer(labels.to_numpy())
    if (codes < 0).any():
        unknown = sorted({str(v) for v in labels[codes < 0]})[:5]
        raise RaysysError(f"labels {unknown} were not seen in the training split")
    return codes.astype(np.int64)


def state_dict_to_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    """Serialize a dict of torch tensors with safetensors (no pickle; tied weights copied)."""
    import torch
    from safetensors.torch import save

    if bad := [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]:
        raise RaysysError(f"state_dict entries are not tensors: {', '.join(map(str, bad))}")
    return save({k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()})


def bytes_to_state_dict(data: bytes) -> dict[str, torch.Tensor]:
    """Deserialize safetensors bytes into a dict of CPU torch tensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(bytes(data))
    except SafetensorError as error:
        raise RaysysError(f"not a safetensors state_dict: {error}") from None
