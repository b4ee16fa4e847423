"""Windows of answered records, and the book that joins delayed labels to them.

:class:`Windower` cuts the stream of answer rows (``_role == "answer"``; shadow answers are not
traffic) into windows by row count (``monitor.window.rows``), by time (``seconds`` after the
window's first row, from ``_time``), or whichever comes first. Rows are taken in the order they
are added (the log reader's file order); a row that arrives after its time's window closed goes to
the open window, so every row is in exactly one window. :meth:`Windower.flush_due` closes a time
window when no new row comes. Its state — the next window number and the open window's rows, as
one zstd Parquet blob — is JSON-able, so a restarted monitor continues the same window.

:class:`LabelBook` holds what joins feedback to predictions, whichever comes first:

- labels whose prediction has not been read yet are kept (``unmatched``) until ``ttl_s`` after the
  label's ``_time``, then dropped and counted (``expired``);
- recent answer rows (``_request_id, _row, _model_version, _time, _prediction, _probabilities``)
  wait for their label for ``ttl_s`` (at most ``max_rows``, newest kept); a label arriving for
  one of them matches it (``matched``, counted once per record);
- duplicate feedback for a record: the label with the newest ``_time`` wins (the later one read
  on a tie) and the record is counted once (``duplicates`` counts the extra labels).

**Live quality and windows.** Labels arrive after the window that held their prediction closed,
so a window's own rows rarely have labels when it closes. Live quality is therefore attributed to
the window *at whose close it was known*: when window ``n`` closes, its ``quality`` is computed
(:func:`raysys.monitoring.quality.window_metrics` with ``labelled=book.labelled(last=…)``) over
the labelled answer rows in the book's horizon — the newest ``last`` labelled records per model
version by prediction time, among predictions at most ``ttl_s`` old. A record labelled later
counts in the windows that close after its label arrived, never in one already written.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from raysys.config import WindowConfig

KEY = ["_request_id", "_row"]
KEPT = ["_request_id", "_row", "_model_version", "_time", "_prediction", "_probabilities"]
MAX_BOOK_ROWS = 50_000


def answer_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of answered requests (shadow answers left out), index reset."""
    if frame.empty:
        return frame.reset_index(drop=True)
    if "_role" in frame.columns:
        frame = frame[frame["_role"].to_numpy() == "answer"]
    return frame.reset_index(drop=True)


def seconds(times: pd.Series) -> np.ndarray:
    """``_time`` values as epoch seconds (float; NaN where missing; naive times are UTC)."""
    if times.dtype.kind != "M":  # tz-aware and naive datetimes convert without parsing
        times = pd.to_datetime(times, utc=True)
    values = times.to_numpy(dtype="datetime64[ns]")
    result = values.astype(np.int64) / 1e9
    result[np.isnat(values)] = np.nan
    return result


def encode_frame(frame: pd.DataFrame | None) -> str | None:
    """A frame as base64 text of zstd Parquet (None for no rows)."""
    if frame is None or frame.empty:
        return None
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_frame(text: str | None) -> pd.DataFrame:
    """:func:`encode_frame`'s text back as a frame (empty for None)."""
    if not text:
        return pd.DataFrame()
    return pd.read_parquet(io.BytesIO(base64.b64decode(text)))


@dataclass
class Window:
    """A closed window: its number, earliest and latest ``_time`` (epoch s), and its answer rows."""

    seq: int
    start: float
    end: float
    frame: pd.DataFrame
    closed_by: str  # "rows" | "time"

    @property
    def rows(self) -> int:
        """How many records the window holds."""
        return len(self.frame)


def _first_at_or_after(times: np.ndarray, start: int, stop: int, deadline: float) -> int:
    """The first index in ``[start, stop)`` whose time is at or past ``deadline`` (``stop`` if none).

    Looks in blocks that double in size, so a window costs about its own length to scan.
    """
    size = 256
    while start < stop:
        end = min(stop, start + size)
        hit = np.flatnonzero(times[start:end] >= deadline)
        if hit.size:
            return start + int(hit[0])
        start, size = end, size * 2
    return stop


class Windower:
    """Cuts answer rows into windows by count and/or time; the open window survives a restart."""

    def __init__(self, cfg: WindowConfig):
        self.cfg = cfg
        self.seq = 0  # number of the open (next) window
        self.opened_at: float | None = None  # ``_time`` of the open window's first row
        self._parts: list[pd.DataFrame] = []
        self._count = 0

    @property
    def open_rows(self) -> int:
        """Records in the open window."""
        return self._count

    def add(self, frame: pd.DataFrame) -> list[Window]:
        """Take new log rows (answer rows kept); the windows they closed, oldest first."""
        rows = answer_rows(frame)
        times = seconds(rows["_time"]) if len(rows) else np.empty(0)
        closed, at = [], 0
        while at < len(rows):
            if self._count == 0:
                self.opened_at = float(times[at])
            stop, reason = len(rows), None
            if self.cfg.rows is not None and at + self.cfg.rows - self._count <= stop:
                stop, reason = at + self.cfg.rows - self._count, "rows"
            if self.cfg.seconds is not None:
                late = _first_at_or_after(times, at, stop, self.opened_at + self.cfg.seconds)
                if late < stop:
                    stop, reason = late, "time"
            if stop > at:
                self._parts.append(rows.iloc[at:stop])
                self._count += stop - at
            at = stop
            if reason is not None:
                closed.append(self._close(reason))
        return closed

    def flush_due(self, now: float) -> list[Window]:
        """Close the open time window if ``seconds`` have passed since it opened (``now``: epoch s)."""
        due = (self.cfg.seconds is not None and self._count > 0
               and now >= self.opened_at + self.cfg.seconds)
        return [self._close("time")] if due else []

    def _close(self, reason: str) -> Window:
        frame = pd.concat(self._parts, ignore_index=True)
        times = seconds(frame["_time"])
        window = Window(self.seq, float(times.min()), float(times.max()), frame, reason)
        self.seq += 1
        self.opened_at, self._parts, self._count = None, [], 0
        return window

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: the next window number and the open window's rows (a Parquet blob)."""
        frame = pd.concat(self._parts, ignore_index=True) if self._parts else None
        self._parts = [frame] if frame is not None else []
        return {"seq": self.seq, "opened_at": self.opened_at, "rows": self._count,
                "frame": encode_frame(frame)}

    @classmethod
    def from_dict(cls, cfg: WindowConfig, data: dict[str, Any] | None) -> Windower:
        """A windower that goes on from :meth:`to_dict`'s state (None: a fresh one)."""
        windower = cls(cfg)
        if data:
            windower.seq, windower.opened_at = int(data["seq"]), data.get("opened_at")
            frame = decode_frame(data.get("frame"))
            windower._parts = [frame] if len(frame) else []
            windower._count = len(frame)
        return windower


def latest_labels(feedback: pd.DataFrame) -> pd.DataFrame:
    """One row per ``(_request_id, _row)``: the label with the newest ``_time`` (later row on a tie).

    ``_row`` defaults to 0 where missing; labels are kept as text, as the log writes them.
    """
    if feedback.empty:
        return pd.DataFrame({"_request_id": pd.Series(dtype=object), "_row": pd.Series(dtype="int64"),
                             "_label": pd.Series(dtype=object),
                             "_time": pd.Series(dtype="datetime64[ns, UTC]")})
    rows = feedback["_row"].fillna(0) if "_row" in feedback else pd.Series(0, index=feedback.index)
    frame = pd.DataFrame({"_request_id": feedback["_request_id"].astype(str), "_row": rows.astype("int64"),
                          "_label": feedback["_label"].astype(str),
                          "_time": pd.to_datetime(feedback["_time"], utc=True)}).reset_index(drop=True)
    order = frame.sort_values("_time", kind="stable")
    return order.drop_duplicates(KEY, keep="last").reset_index(drop=True)


def _pairs(frame: pd.DataFrame) -> np.ndarray:
    """One text key per ``(_request_id, _row)`` (hashing one column is much cheaper than two)."""
    rows = frame["_row"].fillna(0).astype("int64").astype(str) if "_row" in frame else "0"
    return (frame["_request_id"].astype(str) + "\x1f" + rows).to_numpy(dtype=object)


class LabelBook:
    """Delayed labels joined to predictions, arriving in either order; bounded and JSON-able."""

    def __init__(self, ttl_s: float, max_rows: int = MAX_BOOK_ROWS):
        self.ttl_s, self.max_rows = float(ttl_s), int(max_rows)
        self.counts = {"matched": 0, "expired": 0, "duplicates": 0}
        self.pending = latest_labels(pd.DataFrame())  # labels waiting for their prediction
        self.rows = pd.DataFrame(columns=[*KEPT, "_label", "_label_time", "_pair"])  # answers

    @property
    def unmatched(self) -> int:
        """Labels waiting for a prediction that has not been read (yet)."""
        return len(self.pending)

    def stats(self) -> dict[str, int]:
        """``matched`` (records, cumulative), ``unmatched`` (now), ``expired``, ``duplicates``,
        ``awaiting`` (answer rows without a label yet) and ``labelled`` (in the horizon)."""
        labelled = int(self.rows["_label"].notna().sum())
        return {**self.counts, "unmatched": self.unmatched, "labelled": labelled,
                "awaiting": len(self.rows) - labelled}

    def add_feedback(self, feedback: pd.DataFrame, now: float) -> None:
        """Take new feedback rows (``_request_id``, ``_row``, ``_label``, ``_time``)."""
        if feedback.empty:
            self.expire(now)
            return
        labels = latest_labels(feedback)
        self.counts["duplicates"] += len(feedback) - len(labels)
        where = (pd.Index(self.rows["_pair"]).get_indexer(_pairs(labels)) if len(self.rows)
                 else np.full(len(labels), -1))
        hit = where >= 0
        if hit.any():
            at = where[hit]
            known = labels[hit]
            first = self.rows["_label"].isna().to_numpy()[at]
            newer = first | (seconds(known["_time"]) >= seconds(self.rows["_label_time"].iloc[at]))
            self.counts["matched"] += int(first.sum())
            self.counts["duplicates"] += int((~first).sum())
            columns = [self.rows.columns.get_loc(c) for c in ("_label", "_label_time")]
            self.rows.iloc[at[newer], columns[0]] = known["_label"].to_numpy()[newer]
            self.rows.iloc[at[newer], columns[1]] = known["_time"].iloc[np.flatnonzero(newer)].to_numpy()
        waiting = pd.concat([self.pending, labels[~hit]], ignore_index=True)
        self.counts["duplicates"] += int(pd.Series(_pairs(waiting)).duplicated().sum())
        self.pending = latest_labels(waiting)
        self.expire(now)

    def join(self, predictions: pd.DataFrame, now: float) -> pd.DataFrame:
        """``predictions`` with ``_label`` (labels that came first; None otherwise, and for shadows).

        The answer rows stay in the book, waiting for labels that come later.
        """
        answers = answer_rows(predictions)
        if answers.empty:
            self.expire(now)
            return predictions.assign(_label=None)
        keys = _pairs(answers)
        where = (pd.Index(_pairs(self.pending)).get_indexer(keys) if len(self.pending)
                 else np.full(len(answers), -1))
        hit = where >= 0
        self.counts["matched"] += int(hit.sum())
        label = np.full(len(answers), None, dtype=object)
        label[hit] = self.pending["_label"].to_numpy()[where[hit]]
        label_time = pd.Series(pd.NaT, index=answers.index, dtype="datetime64[ns, UTC]")
        label_time.iloc[np.flatnonzero(hit)] = self.pending["_time"].iloc[where[hit]].to_numpy()
        taken = np.zeros(len(self.pending), dtype=bool)
        taken[where[hit]] = True
        self.pending = self.pending[~taken].reset_index(drop=True)
        new = answers[KEPT].assign(_request_id=answers["_request_id"].astype(str),
                                   _row=answers["_row"].astype("int64"), _label=label, _label_time=label_time,
                                   _pair=keys)
        self.rows = pd.concat([self.rows, new], ignore_index=True) if len(self.rows) else new
        if len(self.rows) > len(new):  # a record logged twice keeps its newest row
            self.rows = self.rows[~self.rows["_pair"].duplicated(keep="last").to_numpy()]
        self.expire(now)
        labels = pd.Series([None] * len(predictions), index=predictions.index, dtype=object)
        if "_role" in predictions.columns:
            is_answer = predictions["_role"].to_numpy() == "answer"
        else:
            is_answer = np.ones(len(predictions), dtype=bool)
        labels[is_answer] = label
        return predictions.assign(_label=labels)

    def expire(self, now: float) -> None:
        """Drop labels unmatched for ``ttl_s`` (counted) and answers older than ``ttl_s``."""
        if len(self.pending):
            old = seconds(self.pending["_time"]) < now - self.ttl_s
            self.counts["expired"] += int(old.sum())
            self.pending = self.pending[~old].reset_index(drop=True)
        if len(self.rows):
            fresh = seconds(self.rows["_time"]) >= now - self.ttl_s
            rows = self.rows if fresh.all() else self.rows[fresh]
            if len(rows) > self.max_rows:
                rows = rows.sort_values("_time", kind="stable").iloc[-self.max_rows:]
            if rows is not self.rows:
                self.rows = rows.reset_index(drop=True)

    def labelled(self, last: int | None = None, since: float | None = None) -> pd.DataFrame:
        """Labelled answer rows in the horizon (log columns plus ``_label``), oldest first.

        ``last``: the newest that many per model version (by prediction time); ``since``: only
        predictions at or after this epoch second (a canary's start, for instance).
        """
        rows = self.rows[self.rows["_label"].notna()]
        if since is not None and len(rows):
            rows = rows[seconds(rows["_time"]) >= since]
        rows = rows.sort_values("_time", kind="stable")
        if last is not None:
            rows = rows.groupby("_model_version", sort=False).tail(last)
        return rows.drop(columns=["_label_time", "_pair"]).reset_index(drop=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: counts, waiting labels and the answer rows (Parquet blobs)."""
        return {"ttl_s": self.ttl_s, "max_rows": self.max_rows, "counts": dict(self.counts),
                "pending": encode_frame(self.pending), "rows": encode_frame(self.rows.drop(columns="_pair"))}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, ttl_s: float,
                  max_rows: int = MAX_BOOK_ROWS) -> LabelBook:
        """A book that goes on from :meth:`to_dict`'s state (None: a fresh one); the given
        ``ttl_s`` and ``max_rows`` (the config's, now) apply."""
        book = cls(ttl_s, max_rows)
        if data:
            book.counts.update(data.get("counts", {}))
            pending = decode_frame(data.get("pending"))
            if len(pending):
                book.pending = pending
            rows = decode_frame(data.get("rows"))
            if len(rows):
                book.rows = rows.assign(_pair=_pairs(rows))
        return book
