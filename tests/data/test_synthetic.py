"""The synthetic churn stream: deterministic, valid when clean, learnable, and drifting as asked."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from itertools import pairwise
from multiprocessing import get_context

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from raysys.config import DriftConfig, SyntheticSource
from raysys.data.synthetic import (
    CHUNK_ROWS,
    LABEL,
    SYNTHETIC_COLUMNS,
    generate_rows,
    iter_chunks,
)

COLUMNS = [
    "customer_id", "event_time", "age", "tenure_months", "monthly_spend", "support_tickets",
    "sessions_30d", "discount_pct", "plan", "region", "channel", "churned",
]
FEATURES = [c for c in COLUMNS if c not in ("customer_id", "event_time", LABEL)]
CATEGORICAL = ["plan", "region", "channel"]


def source(rows: int = 200_000, **drift) -> SyntheticSource:
    return SyntheticSource(kind="synthetic", rows=rows, drift=DriftConfig(**drift))


def row_violations(df: pd.DataFrame) -> pd.Series:
    """True for each row that breaks a SYNTHETIC_COLUMNS expectation (checked with pandas)."""
    bad = pd.Series(False, index=df.index)
    for name, spec in SYNTHETIC_COLUMNS.items():
        col = df[name]
        bad |= col.isna()
        if spec.min is not None:
            bad |= (col < spec.min).fillna(False).astype(bool)
        if spec.max is not None:
            bad |= (col > spec.max).fillna(False).astype(bool)
        if spec.allowed is not None:
            bad |= ~col.isin(spec.allowed)
    return bad


def changed_rows(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    """True for each row where any column of a differs from b (nulls equal nulls)."""
    changed = pd.Series(False, index=a.index)
    for name in a.columns:
        x, y = a[name].astype(object), b[name].astype(object)
        same = (x == y) | (x.isna() & y.isna())
        changed |= ~same
    return changed


def design(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.get_dummies(df[FEATURES], columns=CATEGORICAL, dtype=float).astype(float)
    columns = [f"{c}_{v}" for c in CATEGORICAL for v in SYNTHETIC_COLUMNS[c].allowed]
    numeric = [c for c in FEATURES if c not in CATEGORICAL]
    return out.reindex(columns=numeric + columns, fill_value=0.0)


def fit(df: pd.DataFrame):
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return model.fit(design(df), df[LABEL])


def auc(model, df: pd.DataFrame) -> float:
    return roc_auc_score(df[LABEL], model.predict_proba(design(df))[:, 1])


def _rows_in_child(spec_json: str, start: int, stop: int) -> pd.DataFrame:
    return generate_rows(SyntheticSource.model_validate_json(spec_json), start, stop)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize(
    "drift",
    [{}, {"start_row": 100_000, "covariate": 1.0, "concept": 1.0, "label": 0.1, "quality": 0.2}],
    ids=["clean", "all-drift"],
)
def test_any_partitioning_gives_identical_rows(drift):
    spec = source(**drift)
    whole = generate_rows(spec, 0, 200_000)
    cuts = [0, 1, 65_535, 70_001, 99_999, 100_001, 131_072, 131_073, 200_000]
    pieces = [generate_rows(spec, a, b) for a, b in pairwise(cuts)]
    pd.testing.assert_frame_equal(pd.concat(pieces, ignore_index=True), whole, check_exact=True)
    streamed = pd.concat(iter_chunks(spec, 0, 200_000), ignore_index=True)
    pd.testing.assert_frame_equal(streamed, whole, check_exact=True)


def test_rows_are_identical_in_another_process():
    spec = source(start_row=1_000, covariate=0.5, quality=0.3)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        remote = pool.submit(_rows_in_child, spec.model_dump_json(), 500, 70_000).result()
    pd.testing.assert_frame_equal(remote, generate_rows(spec, 500, 70_000), check_exact=True)


def test_offset_continues_the_stream():
    base = SyntheticSource(kind="synthetic", rows=70_000)
    later = SyntheticSource(kind="synthetic", rows=69_900, offset=100)
    expected = generate_rows(base, 100, 70_000)
    pd.testing.assert_frame_equal(generate_rows(later, 0, 69_900), expected, check_exact=True)
    assert generate_rows(later, 0, 1)["customer_id"].tolist() == [100]


def test_same_seed_same_data_other_seed_other_data():
    a = generate_rows(SyntheticSource(kind="synthetic", rows=5_000, seed=7), 0, 5_000)
    b = generate_rows(SyntheticSource(kind="synthetic", rows=5_000, seed=7), 0, 5_000)
    c = generate_rows(SyntheticSource(kind="synthetic", rows=5_000, seed=8), 0, 5_000)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert (a["customer_id"] == c["customer_id"]).all()
    assert (a["event_time"] == c["event_time"]).all()
    for name in ["age", "monthly_spend", "sessions_30d", "plan", LABEL]:
        assert (a[name] != c[name]).mean() > 0.1, name


def test_chunks_are_not_repeats_of_each_other():
    spec = SyntheticSource(kind="synthetic", rows=3 * CHUNK_ROWS)
    first = generate_rows(spec, 0, 5_000)
    for k in (1, 2):
        other = generate_rows(spec, k * CHUNK_ROWS, k * CHUNK_ROWS + 5_000)
        for name in ["age", "monthly_spend", "sessions_30d", "plan"]:
            assert (first[name] != other[name]).mean() > 0.1, (k, name)


# --------------------------------------------------------------------------- shape and validity


def test_columns_and_dtypes():
    df = generate_rows(source(1_000), 0, 1_000)
    assert list(df.columns) == COLUMNS
    ints = ["customer_id", "age", "tenure_months", "support_tickets", "sessions_30d", LABEL]
    assert all(df[c].dtype == np.int64 for c in ints)
    assert df["monthly_spend"].dtype == np.float64 and df["discount_pct"].dtype == np.float64
    assert df["event_time"].dtype == "datetime64[ns]"
    for name in CATEGORICAL:
        assert df[name].map(type).eq(str).all(), name
    assert list(SYNTHETIC_COLUMNS) == COLUMNS


def test_ids_and_event_times():
    spec = SyntheticSource(kind="synthetic", rows=100, offset=40, rows_per_day=10_000,
                           start_time=datetime(2026, 3, 1))
    df = generate_rows(spec, 10, 20)
    assert df["customer_id"].tolist() == list(range(50, 60))
    assert df["event_time"].iloc[0] == pd.Timestamp("2026-03-01") + pd.Timedelta(seconds=50 * 8.64)
    assert (df["event_time"].diff().dropna() == pd.Timedelta(seconds=8.64)).all()


def test_clean_data_meets_every_expectation():
    df = generate_rows(source(), 0, 200_000)
    kinds = {"int": pd.api.types.is_integer_dtype, "float": pd.api.types.is_float_dtype,
             "timestamp": pd.api.types.is_datetime64_dtype,
             "category": pd.api.types.is_object_dtype}
    for name, spec in SYNTHETIC_COLUMNS.items():
        col = df[name]
        assert kinds[spec.type](col.dtype), name
        assert spec.required and col.notna().all(), name
        if spec.min is not None:
            assert col.min() >= spec.min, name
        if spec.max is not None:
            assert col.max() <= spec.max, name
        if spec.allowed is not None:
            assert set(col.unique()) == set(spec.allowed), name
        if spec.unique:
            assert col.is_unique, name
    assert not row_violations(df).any()
    assert 0.20 <= df[LABEL].mean() <= 0.30
    assert 40 <= df["monthly_spend"].median() <= 60


def test_bad_ranges_and_empty_range():
    spec = source(1_000)
    with pytest.raises(ValueError):
        generate_rows(spec, 0, 1_001)
    with pytest.raises(ValueError):
        generate_rows(spec, 10, 5)
    empty = generate_rows(spec, 500, 500)
    assert len(empty) == 0 and list(empty.columns) == COLUMNS


def test_label_is_learnable():
    df = generate_rows(source(), 0, 100_000)
    model = fit(df.iloc[:60_000])
    assert auc(model, df.iloc[60_000:]) > 0.85


def accuracy(model, df: pd.DataFrame) -> float:
    return float((model.predict(design(df)) == df[LABEL]).mean())


def baseline(df: pd.DataFrame) -> float:
    """Accuracy of always answering the majority class."""
    return float(max(df[LABEL].mean(), 1 - df[LABEL].mean()))


def test_drift_costs_a_pre_drift_model_and_retraining_on_new_labels_recovers():
    # the quickstart's stream: seed 7, covariate and concept drift from its start_row on
    spec = SyntheticSource(kind="synthetic", rows=140_000, seed=7, drift=DriftConfig(
        start_row=100_000, covariate=1.0, concept=1.0))
    df = generate_rows(spec, 0, 140_000)
    pre, post = df.iloc[:100_000], df.iloc[100_000:]
    champion = fit(pre.iloc[:60_000])
    held_out, post_test = pre.iloc[60_000:], post.iloc[20_000:]
    assert auc(champion, held_out) > 0.85
    assert accuracy(champion, held_out) > baseline(held_out) + 0.05
    before, after = accuracy(champion, held_out), accuracy(champion, post_test)
    assert after < before - 0.2 and after < baseline(post_test)
    retrained = fit(post.iloc[:20_000])
    recovered = accuracy(retrained, post_test)
    assert auc(retrained, post_test) > 0.8 and recovered > baseline(post_test)
    assert recovered - after > 0.8 * (before - after)


# --------------------------------------------------------------------------- drift


def test_no_start_row_means_no_drift():
    clean = generate_rows(source(20_000), 0, 20_000)
    off = generate_rows(source(20_000, covariate=2, concept=2, label=0.5, quality=1), 0, 20_000)
    pd.testing.assert_frame_equal(off, clean, check_exact=True)


def test_covariate_drift_moves_features_only_after_start_row():
    clean = generate_rows(source(), 0, 200_000)
    drifted = generate_rows(source(start_row=100_000, covariate=1.0), 0, 200_000)
    before, after = drifted.iloc[:100_000], drifted.iloc[100_000:]
    pd.testing.assert_frame_equal(before, clean.iloc[:100_000], check_exact=True)
    reference = clean.iloc[100_000:]
    assert after["monthly_spend"].mean() > 1.2 * reference["monthly_spend"].mean()
    assert after["sessions_30d"].mean() < 0.8 * reference["sessions_30d"].mean()
    assert (after["region"] == "south").mean() > (reference["region"] == "south").mean() + 0.15
    assert (after["plan"] == "basic").mean() > (reference["plan"] == "basic").mean() + 0.15
    assert not row_violations(after).any()


def test_concept_drift_breaks_a_pre_drift_model_but_not_the_marginals():
    clean = generate_rows(source(), 0, 200_000)
    drifted = generate_rows(source(start_row=100_000, concept=1.0), 0, 200_000)
    pd.testing.assert_frame_equal(drifted.iloc[:100_000], clean.iloc[:100_000], check_exact=True)
    model = fit(drifted.iloc[:60_000])
    auc_before = auc(model, drifted.iloc[60_000:100_000])
    auc_after = auc(model, drifted.iloc[100_000:])
    assert auc_before > 0.75
    assert auc_after < auc_before - 0.2
    after, reference = drifted.iloc[100_000:], clean.iloc[100_000:]
    pd.testing.assert_frame_equal(after[FEATURES], reference[FEATURES], check_exact=True)
    before_means = drifted.iloc[:100_000][FEATURES[:6]].mean()
    moved = (after[FEATURES[:6]].mean() - before_means).abs()
    assert (moved < 0.02 * before_means.abs() + 0.05).all()
    for name in CATEGORICAL:
        share = after[name].value_counts(normalize=True) - clean.iloc[:100_000][name].value_counts(
            normalize=True)
        assert share.abs().max() < 0.01, name


@pytest.mark.parametrize("shift", [0.2, -0.15])
def test_label_drift_shifts_the_positive_rate(shift):
    clean = generate_rows(source(), 100_000, 200_000)
    drifted = generate_rows(source(start_row=100_000, label=shift), 0, 200_000)
    assert drifted[LABEL].iloc[:100_000].mean() == pytest.approx(
        generate_rows(source(), 0, 100_000)[LABEL].mean())
    moved = drifted[LABEL].iloc[100_000:].mean() - clean[LABEL].mean()
    assert moved == pytest.approx(shift, abs=0.03)
    pd.testing.assert_frame_equal(drifted.iloc[100_000:][FEATURES].reset_index(drop=True),
                                  clean[FEATURES], check_exact=True)


def test_quality_faults_hit_the_fraction_and_break_an_expectation():
    start, quality = 50_000, 0.3
    faulty = generate_rows(source(150_000, start_row=start, quality=quality), 0, 150_000)
    clean = generate_rows(source(150_000, start_row=start), 0, 150_000)
    changed = changed_rows(faulty, clean)
    violating = row_violations(faulty)
    assert not changed.iloc[:start].any() and not violating.iloc[:start].any()
    assert changed.iloc[start:].mean() == pytest.approx(quality, abs=0.01)
    assert (changed == violating).all()
    hit = faulty[changed]
    assert hit[FEATURES].isna().any(axis=1).mean() == pytest.approx(1 / 3, abs=0.03)
    assert ((hit["age"] == 999) | (hit["age"] == -5)).any() and (hit["monthly_spend"] < 0).any()
    unknown = hit[CATEGORICAL].isin(["UNKNOWN", ""]).any(axis=1)
    assert unknown.mean() == pytest.approx(1 / 3, abs=0.03)
    assert (faulty[LABEL] == clean[LABEL]).all()


def test_quality_faults_keep_dtypes_stable_across_slices():
    spec = source(150_000, start_row=100_000, quality=0.5)
    before, after = generate_rows(spec, 0, 10), generate_rows(spec, 140_000, 150_000)
    assert (before.dtypes == after.dtypes).all()
    assert str(after["age"].dtype) == "Int64" and after["age"].isna().any()


# --------------------------------------------------------------------------- streaming


def test_iter_chunks_streams_millions_in_bounded_frames():
    rows, start = 2_000_000, 12_345
    spec = SyntheticSource(kind="synthetic", rows=rows)
    total, expected_id = 0, start
    for frame in iter_chunks(spec, start):
        assert 0 < len(frame) <= CHUNK_ROWS
        assert frame["customer_id"].iloc[0] == expected_id
        assert frame["customer_id"].is_monotonic_increasing
        expected_id += len(frame)
        total += len(frame)
    assert total == rows - start and expected_id == rows
