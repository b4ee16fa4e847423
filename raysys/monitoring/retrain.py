"""Retrain on fresh labelled production data and register the result as ``challenger`` if it earns it.

:func:`retrain` does, in order:

1. **Data.** The prediction log's answer rows joined with the feedback log (the last label per
   ``(request id, row)`` wins; :func:`labelled_answers`) — for an incident, only records answered
   after it opened (``since``: the world changed then) — the newest ``monitor.retrain.recent_rows``
   of them, need ``min_labelled`` rows. A seeded hash of each row's ``(request id, row)`` holds
   ``holdout`` of them out. The rest, beside a sample of ``reference_rows`` rows of the champion's
   training split (few: a changed concept must outweigh the old one), become a new dataset
   version through the data layer (:meth:`DataService.publish_rows`: validated,
   content-addressed; its ``source`` names the champion's version as its parent and the retrain).
   Schema columns the model does not read are not in the log; they are left empty in the added
   rows (and not required of them).
2. **Train** on Ray Train with the champion's ``model.*`` / ``train.*`` settings
   (:meth:`ModelService.train`), registered with the retrain in its lineage.
3. **Compare** candidate and champion on the held-out rows with the task's primary metric
   (:func:`raysys.modeling.metrics.primary_metric`, in its direction).
4. **Release** decision: alias ``challenger`` only when the candidate is at least as good as the
   champion plus ``min_gain``; otherwise the result says why nothing was released.

Each retrain is audited (``monitor.retrain.start``, then ``monitor.retrain.done`` or
``monitor.retrain.skipped``, actor ``raysys-monitor``) unless the caller audits it itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from raysys import audit
from raysys.config import ColumnSpec, SchemaConfig
from raysys.errors import RaysysError
from raysys.modeling import metrics as metric_fns
from raysys.modeling.predict import LoadedModel
from raysys.monitoring.release import MONITOR_ACTOR
from raysys.monitoring.windows import KEY, answer_rows, latest_labels
from raysys.serving.traffic import stable_unit


@dataclass
class RetrainResult:
    """What a retrain did (JSON-able): its status, the linked ids, the decision and its evidence."""

    status: str  # challenger | not_better | not_enough_labels | failed
    challenger: bool
    reason: str
    trigger: str
    incident: str | None = None
    champion_version: int | None = None
    parent_dataset_version: str | None = None
    dataset_version: str | None = None
    run_id: str | None = None
    model_version: int | None = None
    decision: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return asdict(self)


# --------------------------------------------------------------------------- pure parts

def labelled_answers(predictions: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """Answer rows of the prediction log (all their columns) with their label (``_label``, str).

    Only labelled rows; a request's record is counted once however often it was logged, and
    among several labels for it the newest wins (:func:`raysys.monitoring.windows.latest_labels`).
    """
    if predictions.empty or feedback.empty:
        return pd.DataFrame(columns=[*predictions.columns, "_label"])
    answers = answer_rows(predictions).drop_duplicates(KEY, keep="last")
    answers = answers.astype({"_request_id": str, "_row": "int64"})
    return answers.merge(latest_labels(feedback)[[*KEY, "_label"]], on=KEY, how="inner")


def split_holdout(frame: pd.DataFrame, share: float, seed: str = "raysys-holdout") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train part, held-out part): a row is held out when a seeded hash of its key is below ``share``."""
    units = np.array([stable_unit(f"{seed}:{rid}:{row}") for rid, row in zip(frame["_request_id"], frame["_row"])])
    held = units < share if len(frame) else np.zeros(0, dtype=bool)
    return frame[~held], frame[held]


def label_values(labels: pd.Series, task: str, classes: list[Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """(kept mask, values): labels from their string form to class indices (or floats, regression).

    A label that is not one of the model's classes (or not a finite number) is not kept.
    """
    if task == "regression":
        values = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=float)
        keep = np.isfinite(values)
        return keep, values[keep]
    index = {str(c): i for i, c in enumerate(classes or [])}
    codes = labels.astype(str).map(index)
    keep = codes.notna().to_numpy()
    return keep, codes[keep].to_numpy(dtype=np.int64)


def compare(task: str, candidate: dict[str, Any], champion: dict[str, Any], min_gain: float) -> tuple[bool, dict[str, Any]]:
    """Whether the candidate's primary metric beats the champion's by ``min_gain`` (in its direction)."""
    name, direction = metric_fns.primary_metric(task)
    ours, theirs = candidate.get(name), champion.get(name)
    if ours is None or theirs is None:
        return False, {"metric": name, "direction": direction, "candidate": ours, "champion": theirs,
                       "min_gain": min_gain, "gain": None}
    gain = ours - theirs if direction == "max" else theirs - ours
    return gain >= min_gain, {"metric": name, "direction": direction, "candidate": ours, "champion": theirs,
                              "min_gain": min_gain, "gain": gain}


def rows_for_dataset(frame: pd.DataFrame, columns: dict[str, Any], label: str) -> tuple[pd.DataFrame, SchemaConfig]:
    """Production rows in the dataset's columns (label from its string form), and the schema to check them by.

    Columns the log does not hold are left empty and not required of these rows.
    """
    specs = {name: ColumnSpec(**spec) for name, spec in columns.items()}
    out = pd.DataFrame(index=frame.index)
    for name, spec in specs.items():
        source = "_label" if name == label else name
        if source in frame.columns:
            out[name] = frame[source].to_numpy()
        else:
            out[name] = None
            specs[name] = spec.model_copy(update={"required": False, "max_null_rate": None, "unique": False})
    return out.reset_index(drop=True), SchemaConfig(columns=specs)


# --------------------------------------------------------------------------- the retrain

def read_labelled(system, since: str | None = None) -> pd.DataFrame:
    """Labelled answers of the served model (the prediction log joined with feedback), answered after ``since``."""
    return LabelledLog(system, since).read()


class LabelledLog:
    """The served model's labelled answers after ``since``, read incrementally (cursors): each call
    to :meth:`read` reads only the log files written since the previous one."""

    def __init__(self, system, since: str | None = None):
        from raysys.monitoring.logreader import FEEDBACK, PREDICTIONS

        self.storage, self.since = system.storage, since
        self.directories = (f"{PREDICTIONS}/{system.models.name}", f"{FEEDBACK}/{system.models.name}")
        self.frames: list[list[pd.DataFrame]] = [[], []]
        self.cursors = [None, None]

    def read(self) -> pd.DataFrame:
        """Every labelled answer so far (the newest label per record)."""
        from raysys.monitoring.logreader import read_new

        for i, directory in enumerate(self.directories):
            frame, self.cursors[i] = read_new(self.storage, directory, self.cursors[i])
            if i == 0 and self.since is not None and len(frame):
                frame = frame[pd.to_datetime(frame["_time"], utc=True) >= pd.Timestamp(self.since)]
            if len(frame):
                self.frames[i].append(frame)
        predictions, feedback = (pd.concat(f, ignore_index=True) if f else pd.DataFrame() for f in self.frames)
        return labelled_answers(predictions, feedback)


def wait_for_labels(system, since: str | None, stopping: Callable[[], bool] = lambda: False,
                    poll_s: float = 5.0) -> int:
    """Labelled records after ``since``, once ``min_labelled`` are there or ``label_wait_s`` is over.

    Each poll reads only the log files that arrived since the last one.
    """
    cfg = system.config.monitor.retrain
    deadline = time.monotonic() + cfg.label_wait_s
    log = LabelledLog(system, since)
    while True:
        labelled = len(log.read())
        if labelled >= cfg.min_labelled or time.monotonic() >= deadline or stopping():
            return labelled
        time.sleep(poll_s)


def retrain(system, trigger: str, reason: str, incident: str | None = None,
            record: bool = True, since: str | None = None) -> RetrainResult:
    """Build data, train, compare with the champion, alias ``challenger`` if at least as good.

    ``since`` (ISO time): train on records answered after it only (an incident's first sight).
    ``record``: write the ``monitor.retrain.*`` audit events (the monitor, which audits each
    job itself, passes False). A problem users can fix (no champion, data that fails validation,
    a failed training) is a ``failed`` result, never an exception.
    """
    result = RetrainResult("failed", False, reason, trigger, incident)
    if record:
        audit.record(system.storage, "monitor.retrain.start", {"trigger": trigger, "incident": incident},
                     actor=MONITOR_ACTOR, reason=reason)
    try:
        _retrain(system, result, since)
    except RaysysError as error:
        result.status, result.decision = "failed", f"retrain failed: {error}"
    if record:
        action = "monitor.retrain.skipped" if result.status == "not_enough_labels" else "monitor.retrain.done"
        audit.record(system.storage, action, result.to_dict(), actor=MONITOR_ACTOR, reason=reason)
    return result


def _retrain(system, result: RetrainResult, since: str | None) -> None:
    cfg, models = system.config.monitor.retrain, system.models
    champion = models.registry.get(models.name, "champion")
    champion_model = LoadedModel(models.registry.load_files(champion))
    spec = champion_model.spec
    parent = system.data.show(champion.lineage["dataset_version"])
    result.champion_version, result.parent_dataset_version = champion.version, parent.version

    rows = read_labelled(system, since)
    rows = rows.sort_values("_time", kind="stable").tail(cfg.recent_rows) if len(rows) else rows
    train_rows, held = split_holdout(rows, cfg.holdout) if len(rows) else (rows, rows)
    counts = {"labelled": len(rows), "added": len(train_rows), "held_out": len(held), "since": since}
    result.evidence["rows"] = counts
    if len(rows) < cfg.min_labelled or not len(train_rows) or not len(held):
        result.status = "not_enough_labels"
        after = f" answered after {since}" if since else ""
        result.decision = (f"not enough labelled rows: {len(rows)} labelled production records{after}, "
                           f"monitor.retrain.min_labelled is {cfg.min_labelled}")
        return

    recent, schema = rows_for_dataset(train_rows, parent.columns, spec.label)
    reference = system.data.sample(parent.version, "train", cfg.reference_rows).reindex(columns=recent.columns)
    counts["reference"] = len(reference)
    source = {"kind": "retrain", "parent": parent.version, "trigger": result.trigger, "reason": result.reason,
              "incident": result.incident, "champion_version": champion.version, **counts}
    frame = pd.concat([reference.astype(object), recent.astype(object)], ignore_index=True)
    published = system.data.publish_rows(frame, schema, source)
    result.dataset_version = published.manifest.version
    result.evidence["dataset"] = {"created": published.created, "rows": published.manifest.row_count,
                                  "quarantined": published.report.get("quarantined", 0)}

    params = {f"{section}.{key}": value for section in ("model", "train")
              for key, value in (champion.params.get(section) or {}).items()}
    lineage = {"retrain": {"trigger": result.trigger, "reason": result.reason, "incident": result.incident,
                           "parent_dataset_version": parent.version, "champion_version": champion.version}}
    trained = models.train(published.manifest.version, params=params, lineage=lineage)
    result.run_id, result.model_version = trained.run_id, trained.model.version

    candidate_model = LoadedModel(models.registry.load_files(trained.model))
    scores = {who: held_out_metrics(model, held) for who, model in
              (("candidate", candidate_model), ("champion", champion_model))}
    result.status, result.decision, comparison = release_decision(
        spec.task, scores, cfg.min_gain, champion.version, len(held))
    result.evidence.update(comparison=comparison, held_out=scores)
    if result.status == "challenger":
        result.challenger = True
        models.registry.set_alias(models.name, "challenger", trained.model.version, actor=MONITOR_ACTOR,
                                  reason=f"retrain ({result.trigger}): {result.decision}")


def release_decision(task: str, scores: dict[str, dict[str, Any]], min_gain: float, champion_version: int,
                     held_rows: int) -> tuple[str, str, dict[str, Any]]:
    """(status, decision, comparison): ``challenger`` when the candidate is at least as good + ``min_gain``."""
    better, comparison = compare(task, scores["candidate"], scores["champion"], min_gain)
    shown = (f"{comparison['metric']} {_num(comparison['candidate'])} vs champion v{champion_version} "
             f"{_num(comparison['champion'])} on {held_rows} held-out rows (min_gain {min_gain:g})")
    if not better:
        return "not_better", f"not released: candidate not better: {shown}", comparison
    return "challenger", f"challenger: {shown}", comparison


def held_out_metrics(model: LoadedModel, held: pd.DataFrame) -> dict[str, Any]:
    """A model's metrics on held-out labelled production rows (its own raw inputs and classes)."""
    spec = model.spec
    keep, y = label_values(held["_label"], spec.task, spec.classes)
    inputs = held.loc[keep, model.state.input_columns].reset_index(drop=True)
    if not len(inputs):
        return {"rows": 0}
    output = model.predict(inputs)
    return {"rows": len(inputs), **metric_fns.task_metrics(spec.task, y, output, spec.num_classes)}


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else str(value)
