"""The rule by which a newly trained model becomes the champion by itself (``train.promote_first``).

When the model has no champion yet, a new version becomes it if its loss on the test split is
below the trivial baseline's (class frequencies or the mean, from the train split): log loss for
classifiers, RMSE for regression. A model that does no better than guessing is never served
by accident; any later move is an explicit ``raysys models promote`` or ``raysys deploy``.
"""

from __future__ import annotations

import math
from typing import Any

PRIMARY_LOSS = {"binary": "log_loss", "multiclass": "log_loss", "regression": "rmse"}


def beats_baseline(task: str, evaluation: dict[str, Any]) -> tuple[bool, str]:
    """Whether a model's test loss is below the trivial baseline's, and the comparison in words."""
    metric = PRIMARY_LOSS[task]
    model, baseline = evaluation["metrics"].get(metric), evaluation["baseline"].get(metric)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (model, baseline)):
        return False, f"no finite test {metric} to compare with the trivial baseline's"
    verdict = "below" if model < baseline else "not below"
    return model < baseline, f"test {metric} {model:.4g} {verdict} the trivial baseline's {baseline:.4g}"
