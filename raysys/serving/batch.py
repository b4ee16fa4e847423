"""Batch inference: raw rows from files → the model's preprocessing and network → files.

Ray Data streams the input through an autoscaling pool of actors, each holding one
:class:`LoadedModel` (the online server's code path), so inputs larger than memory work.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from raysys.errors import RaysysError
from raysys.modeling.predict import LoadedModel
from raysys.serving.decisions import DecisionRules

READERS = {".csv": "read_csv", ".parquet": "read_parquet", ".pq": "read_parquet", ".jsonl": "read_json",
           ".json": "read_json"}
ACTOR_CPUS = 0.5


class RawBatchPredictor:
    """A Ray Data callable class: one model per actor; each batch → id/inputs + predictions (+ decisions)."""

    def __init__(self, files: dict[str, bytes], version: int, keep: list[str], rules: dict[str, Any] | None = None):
        self.model, self.version, self.keep = LoadedModel(files), version, keep
        self.rules = DecisionRules.from_dict(rules)

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        return prediction_frame(self.model, self.version, frame, self.keep, self.rules)


def prediction_frame(model: LoadedModel, version: int, frame: pd.DataFrame, keep: list[str],
                     rules: DecisionRules | None = None) -> pd.DataFrame:
    """The kept columns, ``prediction``, per-class ``probability_<class>``, ``decision`` (with rules) and
    ``model_version``; decisions as the server makes them (:mod:`raysys.serving.decisions`)."""
    output = model.predict(frame)
    out = pd.DataFrame({c: frame[c].to_numpy() for c in keep})
    out["prediction"] = model.labels(output)
    if model.task == "binary":
        output = np.column_stack([1.0 - output, output])
    if model.task != "regression":
        for index, cls in enumerate(model.spec.classes):
            out[f"probability_{cls}"] = output[:, index]
    if rules is not None:
        scores = rules.scores(out["prediction"], None if model.task == "regression" else output, model.spec.classes)
        out["decision"] = rules.decide(scores, frame[rules.segment_column] if rules.segment_column else None)
    out["model_version"] = version
    return out


def read_input(path: str) -> Any:
    """A Ray Dataset over a CSV, Parquet or JSON-lines file (or a directory of them)."""
    import os

    import ray.data

    suffix = os.path.splitext(path.rstrip("/"))[1].lower()
    if os.path.isdir(path):
        names = [os.path.splitext(n)[1].lower() for n in os.listdir(path)]
        suffix = next((s for s in names if s in READERS), suffix)
    if not os.path.exists(path):
        raise RaysysError(f"predict --input {path}: no such file or directory")
    if suffix not in READERS:
        raise RaysysError(f"predict --input {path}: unknown format {suffix or '(none)'}; use "
                          f"{', '.join(sorted(READERS))}")
    return getattr(ray.data, READERS[suffix])(path)


def kept_columns(columns: list[str], id_column: str | None) -> list[str]:
    """The id column (explicit, else ``id`` if present), or every input column when there is none."""
    if id_column is not None:
        if id_column not in columns:
            raise RaysysError(f"predict --id {id_column}: not a column of the input ({', '.join(columns)})")
        return [id_column]
    return ["id"] if "id" in columns else list(columns)
