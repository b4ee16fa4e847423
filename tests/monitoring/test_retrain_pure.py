"""The pure parts of a retrain: the label join, the holdout, label values, the comparison, the rows."""

from __future__ import annotations

import pandas as pd

from raysys.monitoring.retrain import (
    compare,
    label_values,
    labelled_answers,
    release_decision,
    rows_for_dataset,
    split_holdout,
)


def log(ids: list[str], rows: list[int], role: str = "answer") -> pd.DataFrame:
    return pd.DataFrame({"x": range(len(ids)), "_request_id": ids, "_row": rows, "_role": role,
                         "_time": pd.Timestamp("2026-01-01", tz="UTC"), "_prediction": "0"})


def feedback(items: list[tuple[str, int, str, int]]) -> pd.DataFrame:
    return pd.DataFrame({"_request_id": [i[0] for i in items], "_row": [i[1] for i in items],
                         "_label": [i[2] for i in items],
                         "_time": [pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(seconds=i[3]) for i in items]})


def test_join_keeps_answers_with_a_label_and_the_last_label_wins_once():
    predictions = pd.concat([log(["a", "a", "b", "c"], [0, 1, 0, 0]), log(["a"], [0], role="shadow")])
    labels = feedback([("a", 1, "1", 5), ("a", 1, "0", 9), ("b", 0, "1", 1), ("zzz", 0, "1", 1)])
    joined = labelled_answers(predictions, labels)
    assert sorted(zip(joined["_request_id"], joined["_row"], joined["_label"])) == [("a", 1, "0"), ("b", 0, "1")]
    assert labelled_answers(predictions, labels.iloc[:0]).empty
    assert labelled_answers(pd.DataFrame(), labels).empty


def test_a_prediction_logged_twice_is_counted_once():
    predictions = pd.concat([log(["a"], [0]), log(["a"], [0])])
    assert len(labelled_answers(predictions, feedback([("a", 0, "1", 0)]))) == 1


def test_holdout_is_a_stable_share_of_rows():
    frame = log([f"r{i}" for i in range(2000)], [0] * 2000)
    kept, held = split_holdout(frame, 0.3)
    assert len(kept) + len(held) == 2000 and 0.25 < len(held) / 2000 < 0.35
    _, again_held = split_holdout(frame.iloc[::-1], 0.3)  # order does not matter
    assert set(again_held["_request_id"]) == set(held["_request_id"])


def test_label_values_from_their_string_form():
    keep, codes = label_values(pd.Series(["1", "0", "7", "1"]), "binary", [0, 1])
    assert keep.tolist() == [True, True, False, True] and codes.tolist() == [1, 0, 1]
    keep, values = label_values(pd.Series(["1.5", "nan", "x"]), "regression", None)
    assert keep.tolist() == [True, False, False] and values.tolist() == [1.5]


def test_compare_follows_the_primary_metric_and_min_gain():
    better, evidence = compare("binary", {"accuracy": 0.9}, {"accuracy": 0.8}, 0.05)
    assert better and evidence["metric"] == "accuracy" and abs(evidence["gain"] - 0.1) < 1e-9
    assert not compare("binary", {"accuracy": 0.82}, {"accuracy": 0.8}, 0.05)[0]
    assert compare("binary", {"accuracy": 0.8}, {"accuracy": 0.8}, 0.0)[0]  # at least as good
    assert not compare("regression", {"r2": None}, {"r2": 0.3}, 0.0)[0]


def test_rows_for_dataset_restores_the_label_and_relaxes_columns_not_logged():
    columns = {"id": {"type": "int", "unique": True}, "x": {"type": "int"}, "y": {"type": "int"}}
    frame = log(["a", "b"], [0, 0]).assign(_label=["1", "0"])
    rows, schema = rows_for_dataset(frame, columns, "y")
    assert list(rows.columns) == ["id", "x", "y"] and rows["y"].tolist() == ["1", "0"]
    assert rows["id"].isna().all()
    assert not schema.columns["id"].required and not schema.columns["id"].unique
    assert schema.columns["x"].required and schema.columns["y"].required


def test_a_candidate_not_better_by_min_gain_is_not_released_and_the_decision_says_why():
    scores = {"candidate": {"accuracy": 0.91}, "champion": {"accuracy": 0.90}}
    status, decision, comparison = release_decision("binary", scores, 0.05, 3, 120)
    assert status == "not_better" and comparison["gain"] < 0.05
    assert decision == ("not released: candidate not better: accuracy 0.9100 vs champion v3 0.9000 "
                        "on 120 held-out rows (min_gain 0.05)")
    status, decision, _ = release_decision("binary", scores, 0.0, 3, 120)
    assert status == "challenger" and decision.startswith("challenger: accuracy 0.9100")
