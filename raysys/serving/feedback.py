"""Delayed ground truth: labels for answered requests, checked against the model and logged.

Labels arrive after the answer, one by one over HTTP (``POST /v1/feedback``, a replica buffers
them and writes them off the request path) or in bulk from a file (``raysys feedback --input``).
Both land as Parquet under ``logs/feedback/<model>/date=YYYY-MM-DD/`` with the prediction log's
machinery (:class:`~raysys.serving.prediction_log.DurableLog`: retried writes, local spill,
exactly-once file names): ``_request_id``, ``_row`` (the record's index in its request),
``_label`` (a string, as the prediction log writes ``_prediction``), ``_time`` (UTC) and
``_source`` (``http`` or ``bulk``). The server keeps no state about them: the monitor joins them
to the prediction log by ``(_request_id, _row)``, and the last label of a pair wins.

A label is refused, naming the field, when the model cannot have it: not one of a classifier's
classes, not a finite number for a regression.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from raysys.data.validation import clip_text
from raysys.errors import RaysysError
from raysys.serving.payloads import RequestError
from raysys.serving.prediction_log import DurableLog, read_log
from raysys.storage import Storage

FEEDBACK_DIR = "logs/feedback"
COLUMNS = ("request_id", "row", "label")
SHOWN_CLASSES = 10  # classes named in an error message


class FeedbackItem(BaseModel):
    """One label: the request it belongs to, the record's index in that request, the true value."""

    request_id: str = Field(description="The request id the prediction answered with.")
    row: int = Field(0, ge=0, description="The record's index in its request (0 for one record).")
    label: Any = Field(description="A class of the model, or a finite number for regression.")


@dataclass(frozen=True)
class LabelSpace:
    """The labels a served model can have: its classes (classifiers), any finite number (regression)."""

    task: str
    classes: tuple[Any, ...] | None

    @classmethod
    def of(cls, specs: Iterable[Any]) -> LabelSpace:
        """The labels any of these model specs (``TrainSpec``: task, classes) can have."""
        specs = list(specs)
        if specs[0].classes is None:
            return cls(specs[0].task, None)
        classes = {str(c): c for spec in specs for c in spec.classes or []}
        return cls(specs[0].task, tuple(classes.values()))

    def canonical(self, value: Any) -> str | None:
        """``value`` as the log writes it (``str`` of the class or number), None if the model cannot have it."""
        if self.classes is None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None
            try:
                number = float(value)
            except OverflowError:
                return None
            return str(number) if math.isfinite(number) else None
        if _is_number(value) and value in self._by_number:
            return self._by_number[value]
        return self._by_text.get(str(value)) if isinstance(value, (str, bool, int)) else None

    @functools.cached_property
    def _by_number(self) -> dict[Any, str]:
        return {c: str(c) for c in self.classes or () if _is_number(c)}

    @functools.cached_property
    def _by_text(self) -> dict[str, str]:
        return {str(c): str(c) for c in self.classes or ()}

    def expected(self) -> str:
        """What a label must be, for error messages."""
        if self.classes is None:
            return "a finite number"
        shown = ", ".join(clip_text(str(c)) for c in self.classes[:SHOWN_CLASSES])
        more = f", … ({len(self.classes)} classes)" if len(self.classes) > SHOWN_CLASSES else ""
        return f"one of the model's classes: {shown}{more}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Labels:
    """Feedback that arrived together (one HTTP request, one file), column by column."""

    request_ids: list[str]
    rows: list[int]
    labels: list[str]
    at: datetime
    source: str  # "http" or "bulk"

    def __len__(self) -> int:
        return len(self.request_ids)


def parse_feedback(body: Any, space: LabelSpace, max_items: int, max_string_chars: int,
                   at: datetime | None = None) -> Labels:
    """The labels of a ``/v1/feedback`` body (one item or a list); a RequestError names the field.

    ``max_items`` bounds the list (413 beyond) and the record index ``row`` (a request holds at
    most that many records).
    """
    single = isinstance(body, dict)
    if not single and not isinstance(body, list):
        raise RequestError("body: expected an object with request_id, row and label, or a list of them",
                           field="body")
    items = [body] if single else body
    if not items:
        raise RequestError("body: empty list; send at least one label", field="body")
    if len(items) > max_items:
        raise RequestError(f"body: {len(items)} labels, at most {max_items} per request (serve.max_records)",
                           status=413, field="body")
    request_ids, rows, labels = [], [], []
    for index, item in enumerate(items):
        where = "" if single else f"[{index}]."
        if not isinstance(item, dict):
            raise RequestError(f"[{index}]: expected an object with request_id, row and label",
                               field=f"[{index}]")
        unknown = next((key for key in item if key not in COLUMNS), None)
        if unknown is not None:
            field = f"{where}{clip_text(str(unknown))}"
            raise RequestError(f"{field}: unknown field (send request_id, row and label)", field=field)
        values = {name: item.get(name) for name in COLUMNS}
        request_ids.append(_request_id(values["request_id"], f"{where}request_id", max_string_chars))
        rows.append(_row(values["row"], f"{where}row", max_items))
        labels.append(_label(values["label"], f"{where}label", space, max_string_chars))
    return Labels(request_ids, rows, labels, at or datetime.now(timezone.utc), "http")


def _request_id(value: Any, field: str, max_chars: int) -> str:
    if value is None:
        raise RequestError(f"{field}: missing (the request id the prediction answered with)", field=field)
    if not isinstance(value, str) or not value:
        raise RequestError(f"{field}: must be a non-empty string", field=field)
    if len(value) > max_chars:
        raise RequestError(f"{field}: string of {len(value):,} characters, at most {max_chars}", field=field)
    return value


def _row(value: Any, field: str, max_records: int) -> int:
    if value is None:
        return 0
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or not 0 <= value < max_records:
        raise RequestError(f"{field}: must be a whole number from 0 to {max_records - 1} (the record's index "
                           f"in its request)", field=field)
    return int(value)


def _label(value: Any, field: str, space: LabelSpace, max_chars: int) -> str:
    if value is None:
        raise RequestError(f"{field}: missing", field=field)
    if isinstance(value, str) and len(value) > max_chars:
        raise RequestError(f"{field}: string of {len(value):,} characters, at most {max_chars}", field=field)
    label = space.canonical(value)
    if label is None:
        shown = clip_text(repr(value)) if isinstance(value, (str, int, float, bool)) else type(value).__name__
        raise RequestError(f"{field}: {shown} is not a label this model can have ({space.expected()})",
                           field=field)
    return label


def feedback_frame(entries: list[Labels]) -> pd.DataFrame:
    """Log rows of feedback: ``_request_id``, ``_row``, ``_label``, ``_time``, ``_source``."""
    def repeat(name: str) -> list[Any]:
        return [value for labels in entries for value in [getattr(labels, name)] * len(labels)]

    return pd.DataFrame({
        "_request_id": [r for labels in entries for r in labels.request_ids],
        "_row": pd.Series([r for labels in entries for r in labels.rows], dtype="int64"),
        "_label": [label for labels in entries for label in labels.labels],
        "_time": pd.to_datetime(repeat("at"), utc=True),
        "_source": repeat("source"),
    })


class FeedbackLog(DurableLog):
    """Feedback buffered and written to ``logs/feedback/<model>/`` (the prediction log's machinery)."""

    def __init__(self, storage: Storage, model: str, flush_rows: int, flush_s: float,
                 max_pending_rows: int = 100_000, spill_dir: str | None = None, **retries: Any):
        super().__init__(storage, FEEDBACK_DIR, model, feedback_frame, flush_rows, flush_s, max_pending_rows,
                         spill_dir, label="feedback log", **retries)

    def add(self, labels: Labels) -> None:
        """Queue labels (an append, no I/O); a background task writes them."""
        self.append(labels, len(labels))

    def write_now(self, labels: Labels) -> int:
        """Write ``labels`` as one file at once (bulk feedback); RaysysError if storage refuses it."""
        self.pending, self.pending_rows = [labels], len(labels)
        batch = self._take()
        encoded = self._encode(batch)
        if encoded is None or not self._write(encoded):
            raise RaysysError(f"feedback: storage {self.storage.uri} refused {len(labels):,} labels "
                              f"{self.attempts} times; nothing was written, run the command again")
        return encoded.rows


# ---------------------------------------------------------------------- bulk feedback

READERS = {".csv": lambda path: pd.read_csv(path, dtype={"request_id": str}),  # "007" stays "007"
           ".parquet": pd.read_parquet, ".pq": pd.read_parquet,
           ".jsonl": lambda path: pd.read_json(path, lines=True, dtype=False),
           ".json": lambda path: pd.read_json(path, lines=True, dtype=False)}


def read_feedback_table(path: str | Path) -> pd.DataFrame:
    """A CSV, Parquet or JSON-lines file of feedback (``request_id``, optional ``row``, ``label``)."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise RaysysError(f"feedback --input {path}: use a .csv, .parquet or .jsonl file")
    if not path.is_file():
        raise RaysysError(f"feedback --input {path}: no such file")
    try:
        return reader(path)
    except Exception as error:  # noqa: BLE001 - any parser's complaint is the file's problem
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise RaysysError(f"feedback --input {path}: cannot read it ({first})") from None


def labels_from_table(frame: pd.DataFrame, space: LabelSpace, max_records: int, max_string_chars: int,
                      name: str = "feedback", at: datetime | None = None) -> Labels:
    """Checked bulk feedback; the first bad value is a RaysysError naming its column and row (1-based)."""
    missing = [c for c in ("request_id", "label") if c not in frame.columns]
    if missing:
        raise RaysysError(f"{name}: missing column(s) {', '.join(missing)} (need request_id, label; row optional)")
    unknown = [str(c) for c in frame.columns if c not in COLUMNS]
    if unknown:
        raise RaysysError(f"{name}: unknown column(s) {clip_text(', '.join(unknown))} (use request_id, row, label)")
    if frame.empty:
        raise RaysysError(f"{name}: no rows")
    columns = {c: _plain_values(frame[c]) if c in frame.columns else [None] * len(frame) for c in COLUMNS}
    request_ids, rows, labels = [], [], []
    for index in range(len(frame)):
        try:
            request_id = columns["request_id"][index]
            request_ids.append(_request_id(str(request_id) if isinstance(request_id, int) else request_id,
                                           "request_id", max_string_chars))
            rows.append(_row(columns["row"][index], "row", max_records))
            labels.append(_label(columns["label"][index], "label", space, max_string_chars))
        except RequestError as error:
            raise RaysysError(f"{name}: row {index + 1}, column {error}") from None
    return Labels(request_ids, rows, labels, at or datetime.now(timezone.utc), "bulk")


def _plain_values(column: pd.Series) -> list[Any]:
    """A column's values as Python scalars, missing values (NaN, NA, None) as None."""
    values = column.astype(object).where(column.notna(), None).tolist()
    return [v.item() if hasattr(v, "item") else v for v in values]


def as_frame(source: str | Path | pd.DataFrame | list[Mapping[str, Any]]) -> tuple[pd.DataFrame, str]:
    """Bulk feedback as a frame, and a name for messages (the file, or "feedback")."""
    if isinstance(source, pd.DataFrame):
        return source, "feedback"
    if isinstance(source, list):
        if not all(isinstance(item, Mapping) for item in source):
            raise RaysysError("feedback: expected a list of {request_id, row, label} mappings")
        return pd.DataFrame(list(source)), "feedback"
    return read_feedback_table(source), f"feedback --input {source}"


def read_feedback_log(storage: Storage, model: str) -> pd.DataFrame:
    """Every feedback row of a model (small logs and tests; the monitor reads incrementally)."""
    return read_log(storage, FEEDBACK_DIR, model)
