"""Splits and preprocessing on a stored version, through Ray Data, against the online path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raysys.data import features
from raysys.errors import RaysysError
from tests.data.test_ingest import synthetic_cfg


@pytest.fixture()
def churn(make_system):
    cfg = synthetic_cfg(rows=12_000)
    cfg["data"]["split"] = {"kind": "stratified", "val": 0.1, "test": 0.2, "seed": 1}
    cfg["features"] = {
        "exclude": ["customer_id"],
        "derived": [{"name": "spend_per_session", "expr": "monthly_spend / (sessions_30d + 1)"}],
        "categorical": {"plan": {"encode": "onehot"}},
    }
    rs = make_system(cfg)
    rs.data.ingest()
    return rs


def test_stratified_splits_partition_the_version_exactly(churn):
    counts = churn.data.split_counts()
    assert sum(counts.values()) == 12_000
    assert counts["test"] == pytest.approx(2400, abs=2) and counts["val"] == pytest.approx(1200, abs=2)
    frames = {name: churn.data.read(split=name).to_pandas() for name in ("train", "val", "test")}
    ids = [set(f["customer_id"]) for f in frames.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    rates = {name: f["churned"].mean() for name, f in frames.items()}
    assert rates["test"] == pytest.approx(rates["train"], abs=0.002)


def test_split_plan_is_cached_and_stable(churn):
    first = churn.data.split_plan()
    assert churn.data.split_plan().to_dict() == first.to_dict()


def test_features_fit_on_train_only_and_offline_equals_online(churn):
    artifact = churn.data.fit_features()
    train = churn.data.read(split="train").to_pandas()
    assert artifact.state.rows == len(train)
    age = next(n for n in artifact.state.to_dict()["numeric"] if n["name"] == "age")
    assert age["stats"]["mean"] == pytest.approx(train["age"].mean())
    # "age" is kept raw (as a slice column is) and is a feature too: the feature is not overwritten
    offline = churn.data.transform(artifact, split="test", keep=["customer_id", "age"]).to_pandas()
    rows = churn.data.read(split="test").to_pandas().set_index("customer_id")
    assert "age" in artifact.state.output_columns
    raw_age = rows.loc[offline["customer_id"].astype(int), "age"].to_numpy()
    assert np.array_equal(offline[features.kept_name("age")].to_numpy(), raw_age)
    sample = offline.sample(50, random_state=0)
    for _, expected in sample.iterrows():
        raw = rows.loc[[int(expected["customer_id"])]].reset_index()
        online = features.transform(artifact.state, raw.drop(columns=["churned"]))
        got = online.iloc[0].to_numpy()
        assert np.array_equal(got, expected[artifact.state.output_columns].to_numpy(np.float32))


def test_features_artifact_round_trips_from_storage(churn):
    artifact = churn.data.fit_features()
    loaded = churn.data.load_features(artifact.id)
    assert loaded.state.state_id == artifact.id and loaded.version == artifact.version
    with pytest.raises(RaysysError, match="no preprocessing artifact 'nope'"):
        churn.data.load_features("nope")


def test_unknown_split_and_version_are_clear_errors(churn):
    with pytest.raises(RaysysError, match="unknown split 'dev'"):
        churn.data.read(split="dev")
    with pytest.raises(RaysysError, match="no version 'ffff'"):
        churn.data.read("ffff")


def test_time_split_on_event_time(make_system):
    cfg = synthetic_cfg(rows=5_000)
    cfg["data"]["split"] = {"kind": "time", "column": "event_time", "val": 0.1, "test": 0.2}
    rs = make_system(cfg)
    rs.data.ingest()
    train = rs.data.read(split="train").to_pandas()
    test = rs.data.read(split="test").to_pandas()
    assert len(test) == 1000 and len(train) == 3500
    assert pd.Timestamp(train["event_time"].max()) < pd.Timestamp(test["event_time"].min())
