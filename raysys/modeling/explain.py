"""Explanations: per-prediction feature attributions and global permutation importance.

Attributions (``"explain": true`` on ``/v1/predict``) explain one scalar per record, the
*explained output*: the probability of the positive class (binary), of the predicted class
(multiclass), or the predicted value (regression). They are computed on the network over the
preprocessed features (integrated gradients, or gradient × input), against a baseline: every
feature at 0 (the training mean of a standard-scaled number, no category of a one-hot group) and
the "other" code of ordinal categoricals (their embeddings are the features there). The terms
are then summed back to the raw input columns: a one-hot group or an embedding to its column, a
derived feature split equally among the columns its expression reads. With integrated gradients
a record's attributions sum to its explained output minus the baseline's (completeness, up to
the path integral's discretisation, ``explain.steps``).

Permutation importance (at training, on the validation split, registered as ``importance.json``)
is the rise of the model's loss (log loss, or RMSE for regression) when one raw input column is
shuffled, averaged over ``explain.permutation_repeats`` shuffles.

Torch only: replicas import this when a request asks for explanations (no Lightning, no Ray).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from raysys.data import features
from raysys.modeling.artifacts import encode_labels

if TYPE_CHECKING:
    import torch

    from raysys.modeling.predict import LoadedModel

IMPORTANCE = "importance.json"
CHUNK_ROWS = 8192  # path points per gradient pass


@dataclass(frozen=True)
class Explanation:
    """Per record: raw column → attribution, the explained output and the baseline's output."""

    attributions: list[dict[str, float]]
    outputs: list[float]
    baselines: list[float]


def raw_shares(state: features.FeatureState) -> dict[str, dict[str, float]]:
    """Per feature (an output column, or an ordinal categorical's name): raw input column → share."""
    def resolve(name: str) -> dict[str, float]:
        if name not in state.programs:
            return {name: 1.0}
        used = sorted(state.programs[name].columns)
        shares: dict[str, float] = {}
        for column in used:
            for raw, share in resolve(column).items():
                shares[raw] = shares.get(raw, 0.0) + share / len(used)
        return shares

    out = {name: resolve(name) for name in state.numeric}
    for name, spec in state.categorical.items():
        columns = [name] if spec["encode"] == "ordinal" else [f"{name}={v}" for v in [*spec["categories"],
                                                                                      features.OTHER]]
        out.update({column: {name: 1.0} for column in columns})
    return out


def explain(model: LoadedModel, raw: features.Columns, method: str = "integrated_gradients",
            steps: int = 32) -> Explanation:
    """Attributions of each record's explained output to its raw input columns."""
    import torch

    from raysys.modeling.models import InputEncoder, array_to_tensors

    values = features.transform_values(model.state, raw)
    x_num, x_cat = array_to_tensors(values, model.state.output_columns, model.inputs)
    encoder = next((m for m in model.network.modules() if isinstance(m, InputEncoder)), None)
    cardinality = torch.tensor(list(model.inputs.categorical.values()), dtype=torch.int64)
    base_num, base_cat = torch.zeros_like(x_num[:1]), (cardinality - 1).reshape(1, -1)
    with torch.no_grad():
        point = encoder(x_num, x_cat) if encoder is not None else x_num
        base = encoder(base_num, base_cat) if encoder is not None else base_num
        logits = model.network(x_num, x_cat)
    target = logits.argmax(dim=1) if model.task == "multiclass" else None

    def output(z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The explained output of the network whose features (encoder output) are ``z``."""
        if encoder is None:
            raw_out = model.network(z, x_cat[rows])
        else:
            handle = encoder.register_forward_hook(lambda module, args, result: z)
            try:
                raw_out = model.network(x_num[rows], x_cat[rows])
            finally:
                handle.remove()
        return _explained(raw_out, model, None if target is None else target[rows])

    n = len(x_num)
    if method == "gradient_x_input":
        grads = _gradients(output, point, torch.arange(n))
    else:
        alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
        path = base + alphas.reshape(-1, 1, 1) * (point - base).unsqueeze(0)  # [steps, n, width]
        rows = torch.arange(n).repeat(steps)
        grads = _gradients(output, path.reshape(steps * n, -1), rows).reshape(steps, n, -1).mean(dim=0)
    terms = ((point - base) * grads).numpy().astype(np.float64)
    with torch.no_grad():
        explained = _explained(logits, model, target).numpy()
        baseline = _explained(model.network(base_num, base_cat).expand(n, -1), model, target).numpy()
    return Explanation(_to_raw(terms, model, encoder), explained.astype(float).tolist(),
                       baseline.astype(float).tolist())


def _explained(raw: torch.Tensor, model: LoadedModel, target: torch.Tensor | None) -> torch.Tensor:
    """Per row: P(positive class), P(``target`` class) or the de-standardized value."""
    import torch

    if model.task == "binary":
        return torch.sigmoid(raw.reshape(-1))
    if model.task == "multiclass":
        return torch.softmax(raw, dim=1).gather(1, target.reshape(-1, 1)).reshape(-1)
    return raw.reshape(-1) * model.spec.target_std + model.spec.target_mean


def _gradients(output: Any, points: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """d output / d features at each point (in chunks of CHUNK_ROWS)."""
    import torch

    parts = []
    for start in range(0, len(points), CHUNK_ROWS):
        chunk = points[start:start + CHUNK_ROWS].detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(output(chunk, rows[start:start + CHUNK_ROWS]).sum(), chunk)
        parts.append(grad)
    return torch.cat(parts) if parts else torch.zeros_like(points)


def _to_raw(terms: np.ndarray, model: LoadedModel, encoder: Any) -> list[dict[str, float]]:
    """Feature terms ``[n, width]`` summed into raw input columns, one dict per record."""
    shares = raw_shares(model.state)
    width_of = [1] * len(model.inputs.numeric)
    names = list(model.inputs.numeric)
    if encoder is not None:
        names += list(model.inputs.categorical)
        width_of += [e.embedding_dim for e in encoder.embeddings]
    raw_columns = model.state.input_columns
    matrix = np.zeros((terms.shape[1], len(raw_columns)))
    position, start = {c: i for i, c in enumerate(raw_columns)}, 0
    for name, width in zip(names, width_of):
        for raw, share in shares[name].items():
            matrix[start:start + width, position[raw]] = share
        start += width
    summed = terms @ matrix
    return [dict(zip(raw_columns, row)) for row in np.round(summed, 6).tolist()]


# --------------------------------------------------------------------------- permutation importance


def permutation_importance(model: LoadedModel, frame: pd.DataFrame, repeats: int, seed: int = 0) -> dict[str, Any]:
    """Rise of the loss when each raw input column of ``frame`` (rows with the label) is shuffled."""
    from raysys.modeling.metrics import task_metrics

    spec = model.spec
    known = frame[spec.label].notna() if spec.classes is None else frame[spec.label].isin(spec.classes)
    frame = frame[known.to_numpy()].reset_index(drop=True)  # a label unseen in training has no loss
    y = np.asarray(encode_labels(frame[spec.label], spec.classes))
    metric = "rmse" if spec.task == "regression" else "log_loss"

    def loss(rows: pd.DataFrame) -> float:
        return float(task_metrics(spec.task, y, model.predict(rows), spec.num_classes)[metric])

    rng = np.random.default_rng(seed)
    reference = loss(frame)
    importance = {}
    for column in model.state.input_columns:
        rises = []
        for _ in range(repeats):
            shuffled = frame.copy()
            shuffled[column] = rng.permutation(frame[column].to_numpy())
            rises.append(loss(shuffled) - reference)
        importance[column] = {"mean": round(float(np.mean(rises)), 6), "std": round(float(np.std(rises)), 6)}
    ranked = dict(sorted(importance.items(), key=lambda item: -item[1]["mean"]))
    return {"metric": metric, "loss": round(reference, 6), "rows": len(frame), "repeats": repeats,
            "seed": seed, "importance": ranked}
