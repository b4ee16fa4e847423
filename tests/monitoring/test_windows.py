"""Windows of answered records and the label book (pure pandas; no Ray)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from raysys.config import WindowConfig
from raysys.monitoring.logreader import PREDICTIONS, LogCursor, read_new
from raysys.monitoring.windows import LabelBook, Windower, latest_labels
from raysys.serving import payloads
from raysys.serving.prediction_log import LOG_DIR, prediction_frame
from raysys.storage import Storage

SIGNATURE = {"tenure": "float", "plan": "string"}
T0 = datetime(2026, 10, 1, 12, 0, tzinfo=timezone.utc)


def log_rows(ids: list[str], start_s: float = 0.0, step_s: float = 1.0, role: str = "answer",
             version: int = 1) -> pd.DataFrame:
    """Log rows of one-record requests, one every ``step_s`` seconds from ``T0 + start_s``."""
    entries = []
    for n, request_id in enumerate(ids):
        rows, _ = payloads.parse_records({"records": [{"tenure": float(n), "plan": "pro"}]}, SIGNATURE, 10)
        answer = {"predictions": ["1"], "probabilities": [[0.3, 0.7]], "classes": [0, 1]}
        at = T0 + timedelta(seconds=start_s + n * step_s)
        entries.append((rows, answer, {"request_id": request_id, "version": version, "role": role,
                                       "latency_ms": 1.0, "key": None, "at": at}))
    return prediction_frame(entries)


def feedback(pairs: list[tuple[str, str]], at_s: float, row: int = 0) -> pd.DataFrame:
    """Feedback rows as the feedback log writes them."""
    return pd.DataFrame({"_request_id": [r for r, _ in pairs], "_row": [row] * len(pairs),
                         "_label": [label for _, label in pairs],
                         "_time": pd.to_datetime([T0 + timedelta(seconds=at_s)] * len(pairs), utc=True),
                         "_source": ["http"] * len(pairs)})


def epoch(seconds_after_t0: float) -> float:
    return T0.timestamp() + seconds_after_t0


def window_ids(windows) -> list[list[str]]:
    return [w.frame["_request_id"].tolist() for w in windows]


def test_row_windows_close_at_the_row_count_and_leave_shadows_out():
    windower = Windower(WindowConfig(rows=4, min_rows=1))
    first = windower.add(pd.concat([log_rows(["a", "b", "c"]), log_rows(["a"], role="shadow")]))
    assert first == [] and windower.open_rows == 3
    closed = windower.add(log_rows(["d", "e", "f", "g", "h", "i"], start_s=3))
    assert window_ids(closed) == [["a", "b", "c", "d"], ["e", "f", "g", "h"]]
    assert [w.seq for w in closed] == [0, 1] and [w.closed_by for w in closed] == ["rows", "rows"]
    assert closed[0].start == epoch(0) and closed[0].end == epoch(3)
    assert windower.open_rows == 1


def test_time_windows_close_on_the_first_later_row_or_when_due():
    windower = Windower(WindowConfig(rows=None, seconds=10, min_rows=1))
    closed = windower.add(log_rows([f"r{n}" for n in range(25)]))  # one row a second, 0..24 s
    assert window_ids(closed) == [[f"r{n}" for n in range(10)], [f"r{n}" for n in range(10, 20)]]
    assert all(w.closed_by == "time" for w in closed)
    assert windower.flush_due(epoch(29)) == [] and windower.open_rows == 5
    due = windower.flush_due(epoch(30))
    assert window_ids(due) == [[f"r{n}" for n in range(20, 25)]] and due[0].seq == 2
    assert windower.flush_due(epoch(100)) == []


def test_rows_or_time_whichever_comes_first():
    windower = Windower(WindowConfig(rows=3, seconds=10, min_rows=1))
    closed = windower.add(log_rows(["a", "b", "c", "d"], step_s=1) )
    closed += windower.add(log_rows(["e"], start_s=30))
    assert window_ids(closed) == [["a", "b", "c"], ["d"]]
    assert [w.closed_by for w in closed] == ["rows", "time"] and windower.open_rows == 1


def test_a_restarted_monitor_continues_the_open_window_and_counts_no_row_twice(tmp_path):
    storage = Storage.open(str(tmp_path))
    names = [f"r{n:02d}" for n in range(23)]

    def write(seq: int, chunk: list[str]) -> None:
        frame = log_rows(chunk, start_s=seq * 10)
        at = T0 + timedelta(seconds=seq * 10)
        storage.write_bytes(frame.to_parquet(index=False), LOG_DIR, "churn", "date=2026-10-01",
                            f"part-{int(at.timestamp() * 1000)}-abc-{seq:06d}.parquet")

    cfg = WindowConfig(rows=5, min_rows=1)

    def step(state: dict) -> tuple[list, dict]:
        """One monitor step from the committed JSON state: its closed windows and the new state."""
        cursor, windower = LogCursor.from_dict(state["cursor"]), Windower.from_dict(cfg, state["windower"])
        frame, cursor = read_new(storage, f"{PREDICTIONS}/churn", cursor)
        closed = windower.add(frame)
        return closed, json.loads(json.dumps({"cursor": cursor.to_dict(), "windower": windower.to_dict()}))

    state, windows = {"cursor": None, "windower": None}, []
    for seq, start in enumerate(range(0, 23, 7)):
        write(seq, names[start:start + 7])
        if seq == 1:  # killed after the step, before its commit: the restarted monitor redoes it
            lost, _ = step(state)
        closed, state = step(state)
        if seq == 1:
            assert window_ids(closed) == window_ids(lost) and [w.seq for w in closed] == [1]
        windows += closed
    assert Windower.from_dict(cfg, state["windower"]).open_rows == 3


def test_the_open_windows_rows_round_trip_with_their_values():
    windower = Windower(WindowConfig(rows=3, min_rows=1))
    windower.add(log_rows(["a", "b"]))
    restored = Windower.from_dict(WindowConfig(rows=3, min_rows=1), json.loads(json.dumps(windower.to_dict())))
    (window,) = restored.add(log_rows(["c"], start_s=5))
    assert window.frame["tenure"].tolist() == [0.0, 1.0, 0.0]
    assert [list(p) for p in window.frame["_probabilities"]] == [[0.3, 0.7]] * 3


# ------------------------------------------------------------------ the label book


def test_a_label_that_comes_before_its_prediction_is_joined_when_the_prediction_comes():
    book = LabelBook(ttl_s=3600)
    book.add_feedback(feedback([("a", "0")], at_s=1), now=epoch(1))
    assert book.stats()["unmatched"] == 1
    joined = book.join(pd.concat([log_rows(["a", "b"], start_s=2), log_rows(["a"], start_s=2, role="shadow")],
                                 ignore_index=True), now=epoch(3))
    assert joined["_label"].tolist() == ["0", None, None]
    assert book.stats() == {"matched": 1, "expired": 0, "duplicates": 0, "unmatched": 0, "labelled": 1,
                            "awaiting": 1}


def test_a_label_that_comes_after_its_prediction_is_matched_in_the_book():
    book = LabelBook(ttl_s=3600)
    joined = book.join(log_rows(["a", "b"]), now=epoch(1))
    assert joined["_label"].isna().all()
    book.add_feedback(feedback([("b", "1")], at_s=60), now=epoch(60))
    labelled = book.labelled()
    assert labelled["_request_id"].tolist() == ["b"] and labelled["_label"].tolist() == ["1"]
    assert {"_model_version", "_prediction", "_probabilities", "_time"} <= set(labelled.columns)
    assert book.stats()["matched"] == 1 and book.stats()["unmatched"] == 0


def test_duplicate_feedback_the_newest_label_wins_and_the_record_counts_once():
    book = LabelBook(ttl_s=3600)
    book.add_feedback(pd.concat([feedback([("a", "0")], at_s=5), feedback([("a", "1")], at_s=4)]),
                      now=epoch(5))
    book.add_feedback(feedback([("a", "1")], at_s=6), now=epoch(6))
    book.join(log_rows(["a"], start_s=1), now=epoch(7))
    assert book.labelled()["_label"].tolist() == ["1"]
    book.add_feedback(feedback([("a", "0")], at_s=3), now=epoch(8))  # an older label, read late: loses
    assert book.labelled()["_label"].tolist() == ["1"]
    book.add_feedback(feedback([("a", "0")], at_s=9), now=epoch(9))  # a newer one wins
    assert book.labelled()["_label"].tolist() == ["0"]
    stats = book.stats()
    assert stats["matched"] == 1 and stats["duplicates"] == 4 and stats["labelled"] == 1


def test_labels_for_unknown_requests_expire_after_the_ttl_and_are_counted():
    book = LabelBook(ttl_s=100)
    book.add_feedback(feedback([("ghost", "1"), ("late", "0")], at_s=0), now=epoch(0))
    book.join(log_rows(["late"], start_s=50), now=epoch(50))
    book.expire(epoch(100))
    assert book.stats()["unmatched"] == 1 and book.stats()["expired"] == 0
    book.expire(epoch(101))
    assert book.stats()["unmatched"] == 0 and book.stats()["expired"] == 1 and book.stats()["matched"] == 1


def test_the_book_is_bounded_and_survives_json():
    book = LabelBook(ttl_s=3600, max_rows=3)
    book.join(log_rows(["a", "b", "c", "d", "e"]), now=epoch(5))
    book.add_feedback(feedback([("a", "1"), ("e", "0"), ("x", "1")], at_s=6), now=epoch(6))
    state = json.loads(json.dumps(book.to_dict()))
    restored = LabelBook.from_dict(state, ttl_s=3600, max_rows=3)
    assert restored.stats() == book.stats()
    assert restored.stats()["awaiting"] + restored.stats()["labelled"] == 3
    assert restored.labelled()["_request_id"].tolist() == ["e"]  # "a" left the book: its label waits
    assert restored.unmatched == 2
    restored.add_feedback(feedback([("c", "1")], at_s=7), now=epoch(7))
    assert restored.labelled()["_request_id"].tolist() == ["c", "e"]


def test_labelled_keeps_the_newest_per_version_or_those_since_a_time():
    book = LabelBook(ttl_s=3600)
    book.join(pd.concat([log_rows(["a", "b", "c"], version=1), log_rows(["d", "e"], start_s=3, version=2)],
                        ignore_index=True), now=epoch(5))
    book.add_feedback(feedback([(r, "1") for r in "abcde"], at_s=6), now=epoch(6))
    assert book.labelled(last=2)["_request_id"].tolist() == ["b", "c", "d", "e"]
    assert book.labelled(since=epoch(2))["_request_id"].tolist() == ["c", "d", "e"]


@pytest.mark.parametrize("missing_row", [True, False])
def test_latest_labels_defaults_the_row_to_zero(missing_row):
    frame = feedback([("a", "1")], at_s=0, row=0)
    if missing_row:
        frame = frame.drop(columns="_row")
    assert latest_labels(frame)[["_request_id", "_row", "_label"]].values.tolist() == [["a", 0, "1"]]


def test_feedback_files_from_the_feedback_log_join_the_prediction_log(tmp_path):
    from raysys.monitoring.logreader import FEEDBACK
    from raysys.serving.feedback import FeedbackLog, Labels

    storage = Storage.open(str(tmp_path / "root"))
    predictions = log_rows(["a", "b", "c"])
    storage.write_bytes(predictions.to_parquet(index=False), LOG_DIR, "churn", "date=2026-10-01",
                        f"part-{int(T0.timestamp() * 1000)}-abc-000000.parquet")
    log = FeedbackLog(storage, "churn", flush_rows=100, flush_s=1.0, spill_dir=str(tmp_path / "spill"))
    log.write_now(Labels(["a", "zzz"], [0, 0], ["0", "1"], T0 + timedelta(seconds=30), "bulk"))
    book, cursors = LabelBook(ttl_s=3600), {"p": LogCursor(), "f": LogCursor()}

    def step(now_s: float) -> pd.DataFrame:
        labels, cursors["f"] = read_new(storage, f"{FEEDBACK}/churn", cursors["f"])
        rows, cursors["p"] = read_new(storage, f"{PREDICTIONS}/churn", cursors["p"])
        book.add_feedback(labels, now=epoch(now_s))
        return book.join(rows, now=epoch(now_s))

    assert step(31)["_label"].tolist() == ["0", None, None]  # read in the same step as its prediction
    log.write_now(Labels(["a", "b"], [0, 0], ["1", "1"], T0 + timedelta(seconds=40), "bulk"))
    step(41)
    step(42)  # nothing new: nothing counted again
    assert book.labelled()[["_request_id", "_label"]].values.tolist() == [["a", "1"], ["b", "1"]]
    assert book.stats() == {"matched": 2, "expired": 0, "duplicates": 1, "unmatched": 1, "labelled": 2,
                            "awaiting": 1}


def test_a_record_joined_twice_stays_once_in_the_book():
    book = LabelBook(ttl_s=3600)
    book.join(log_rows(["a", "b"]), now=epoch(2))
    book.join(log_rows(["b"], start_s=1), now=epoch(3))
    book.add_feedback(feedback([("b", "1")], at_s=4), now=epoch(4))
    assert book.stats()["awaiting"] == 1 and book.labelled()["_request_id"].tolist() == ["b"]
