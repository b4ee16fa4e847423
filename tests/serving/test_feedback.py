"""Feedback (delayed labels): parsing, the labels a model can have, the log's files and bulk input.

Pure functions and the feedback log on real (local and failing) pyarrow filesystems; no Ray.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timezone
from types import SimpleNamespace

import pandas as pd
import pytest

from raysys.errors import RaysysError
from raysys.serving.feedback import (
    FeedbackLog,
    Labels,
    LabelSpace,
    as_frame,
    labels_from_table,
    parse_feedback,
    read_feedback_log,
)
from raysys.serving.payloads import RequestError
from tests.serving.test_prediction_log import flaky_storage, spilled_files

AT = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
BINARY = LabelSpace("binary", (0, 1))
NAMED = LabelSpace("multiclass", ("cat", "dog", "emu"))
REGRESSION = LabelSpace("regression", None)


def parse(body, space=BINARY, max_items: int = 10) -> Labels:
    return parse_feedback(body, space, max_items, 64, AT)


def test_one_label_or_a_list_with_rows_defaulting_to_zero():
    one = parse({"request_id": "r1", "label": 1})
    assert (one.request_ids, one.rows, one.labels, one.source) == (["r1"], [0], ["1"], "http")
    many = parse([{"request_id": "r1", "row": 2, "label": 0}, {"request_id": "r2", "row": None, "label": "1"}])
    assert (many.request_ids, many.rows, many.labels) == (["r1", "r2"], [2, 0], ["0", "1"])


@pytest.mark.parametrize(("space", "value", "logged"), [
    (BINARY, 1, "1"), (BINARY, 1.0, "1"), (BINARY, "0", "0"), (NAMED, "emu", "emu"),
    (REGRESSION, 3, "3.0"), (REGRESSION, -0.25, "-0.25"),
])
def test_a_label_is_logged_as_the_prediction_log_writes_the_class_or_number(space, value, logged):
    assert space.canonical(value) == logged


@pytest.mark.parametrize(("space", "value"), [
    (BINARY, 2), (BINARY, True), (BINARY, "yes"), (BINARY, 0.5), (BINARY, float("nan")), (NAMED, "Cat"),
    (NAMED, 1), (REGRESSION, float("inf")), (REGRESSION, float("nan")), (REGRESSION, "3.5"),
    (REGRESSION, True), (REGRESSION, 10**400), (REGRESSION, [1.0]),
])
def test_a_label_the_model_cannot_have_is_refused(space, value):
    assert space.canonical(value) is None
    with pytest.raises(RequestError) as caught:
        parse({"request_id": "r1", "label": value}, space)
    assert caught.value.status == 422 and caught.value.field == "label"


def test_the_label_space_of_several_versions_is_their_classes_together():
    specs = [SimpleNamespace(task="multiclass", classes=["cat", "dog"]),
             SimpleNamespace(task="multiclass", classes=["dog", "emu"])]
    assert LabelSpace.of(specs).classes == ("cat", "dog", "emu")
    assert LabelSpace.of([SimpleNamespace(task="regression", classes=None)]) == REGRESSION


@pytest.mark.parametrize(("body", "status", "field"), [
    ("just text", 422, "body"),
    ([], 422, "body"),
    ([{"request_id": "r", "label": 1}] * 11, 413, "body"),
    ([{"request_id": "r", "label": 1}, 7], 422, "[1]"),
    ({"label": 1}, 422, "request_id"),
    ({"request_id": "", "label": 1}, 422, "request_id"),
    ({"request_id": 12, "label": 1}, 422, "request_id"),
    ({"request_id": "x" * 65, "label": 1}, 422, "request_id"),
    ({"request_id": "r", "row": -1, "label": 1}, 422, "row"),
    ({"request_id": "r", "row": 10, "label": 1}, 422, "row"),  # a request holds at most max_items records
    ({"request_id": "r", "row": 1.5, "label": 1}, 422, "row"),
    ({"request_id": "r", "row": True, "label": 1}, 422, "row"),
    ({"request_id": "r"}, 422, "label"),
    ([{"request_id": "r", "label": 1}, {"request_id": "r", "label": 9}], 422, "[1].label"),
    ({"request_id": "r", "label": 1, "lable": 0}, 422, "lable"),
    ({"request_id": "r", "label": "y" * 100_000}, 422, "label"),
])
def test_bad_bodies_name_the_field(body, status, field):
    with pytest.raises(RequestError) as caught:
        parse(body)
    assert (caught.value.status, caught.value.field) == (status, field)
    assert len(str(caught.value)) < 300  # no value echoed at length


def test_feedback_rows_land_once_each_while_storage_fails_for_a_while(tmp_path):
    storage, _ = flaky_storage(tmp_path, fail_writes=5)
    log = FeedbackLog(storage, "churn", flush_rows=3, flush_s=0.1, spill_dir=str(tmp_path / "spill"),
                      attempts=2, backoff_s=0.01)
    ids = [f"r{i}" for i in range(30)]

    async def receive():
        for request_id in ids:
            log.add(parse({"request_id": request_id, "row": 1, "label": 1}))
            await asyncio.sleep(0.01)
        await log.close()

    asyncio.run(receive())
    frame = read_feedback_log(storage, "churn")
    assert Counter(frame["_request_id"]) == Counter({request_id: 1 for request_id in ids})
    assert frame.dtypes["_row"] == "int64" and set(frame["_row"]) == {1} and set(frame["_label"]) == {"1"}
    assert set(frame["_source"]) == {"http"} and (frame["_time"] == AT).all()
    assert log.stats()["spilled_rows"] > 0 and log.stats()["lost_rows"] == 0 and spilled_files(tmp_path) == []
    days = list((tmp_path / "store" / "logs" / "feedback" / "churn").iterdir())
    assert [d.name for d in days] == ["date=2026-11-29"]


def test_bulk_feedback_reads_csv_parquet_and_jsonl_alike(tmp_path):
    frame = pd.DataFrame({"request_id": ["a", "b", "007"], "row": [0, 3, 1], "label": [1, 0, 1]})
    frame.to_csv(tmp_path / "f.csv", index=False)
    frame.to_parquet(tmp_path / "f.parquet")
    frame.to_json(tmp_path / "f.jsonl", orient="records", lines=True)
    for name in ("f.csv", "f.parquet", "f.jsonl"):
        table, label = as_frame(str(tmp_path / name))
        labels = labels_from_table(table, BINARY, 1000, 64, label, AT)
        assert (labels.request_ids, labels.rows, labels.labels, labels.source) == \
               (["a", "b", "007"], [0, 3, 1], ["1", "0", "1"], "bulk")
    no_rows = labels_from_table(pd.DataFrame({"request_id": [7], "label": ["dog"]}), NAMED, 1000, 64)
    assert (no_rows.request_ids, no_rows.rows) == (["7"], [0])
    listed = labels_from_table(as_frame([{"request_id": "a", "label": 2.5}])[0], REGRESSION, 1000, 64)
    assert listed.labels == ["2.5"]


@pytest.mark.parametrize(("frame", "message"), [
    (pd.DataFrame({"request_id": ["a"]}), "missing column(s) label"),
    (pd.DataFrame({"request_id": ["a"], "label": [1], "score": [0.3]}), "unknown column(s) score"),
    (pd.DataFrame({"request_id": ["a", "b"], "label": [1, 7]}), "row 2, column label: 7 is not a label"),
    (pd.DataFrame({"request_id": ["a", None], "label": [1, 0]}), "row 2, column request_id: missing"),
    (pd.DataFrame({"request_id": ["a", "b"], "row": [0, -2], "label": [1, 0]}), "row 2, column row:"),
    (pd.DataFrame({"request_id": ["a", "b"], "label": [1, None]}), "row 2, column label: missing"),
    (pd.DataFrame({"request_id": [], "label": []}), "no rows"),
])
def test_bad_bulk_feedback_is_one_line_naming_the_column_and_row(frame, message):
    with pytest.raises(RaysysError) as caught:
        labels_from_table(frame, BINARY, 1000, 64, "feedback --input x.csv")
    text = str(caught.value)
    assert text.startswith("feedback --input x.csv: ") and message in text and "\n" not in text


def test_an_unreadable_or_unknown_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    for path, message in ((tmp_path / "bad.parquet", "cannot read it"), (tmp_path / "x.txt", "use a .csv"),
                          (tmp_path / "gone.csv", "no such file")):
        with pytest.raises(RaysysError, match=message):
            as_frame(str(path))


def test_bulk_feedback_is_one_file_or_an_error_when_storage_refuses(tmp_path):
    storage, handler = flaky_storage(tmp_path, fail_writes=10**9)
    log = FeedbackLog(storage, "churn", 1000, 1.0, spill_dir=str(tmp_path / "spill"), attempts=2, backoff_s=0.01)
    labels = labels_from_table(pd.DataFrame({"request_id": ["a", "b"], "label": [1, 0]}), BINARY, 1000, 64)
    with pytest.raises(RaysysError, match="refused 2 labels"):
        log.write_now(labels)
    assert read_feedback_log(storage, "churn").empty and spilled_files(tmp_path) == []
    handler.fail_writes = 0
    assert log.write_now(labels) == 2
    assert read_feedback_log(storage, "churn")["_source"].tolist() == ["bulk", "bulk"]
