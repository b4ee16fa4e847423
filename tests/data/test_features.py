"""Feature engineering: planning, mergeable fitting, the JSON artifact and skew-free transform."""

from __future__ import annotations

import itertools
import json
import pickle
from functools import reduce

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from raysys.config import FeaturesConfig
from raysys.data.features import (
    OTHER,
    FeatureState,
    finalize,
    fit,
    fit_partial,
    merge_partials,
    plan_features,
    transform,
    transform_values,
)
from raysys.errors import ConfigError, RaysysError

TYPES = {
    "customer_id": "string",
    "age": "int",
    "monthly_spend": "float",
    "is_active": "bool",
    "plan": "category",
    "region": "string",
    "event_time": "timestamp",
    "churned": "bool",
}


def make_frame(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    spend = rng.gamma(2.0, 30.0, rows).round(2)
    spend[rng.random(rows) < 0.1] = np.nan
    region = rng.choice(["eu", "us", "apac", "latam"], rows, p=[0.4, 0.3, 0.2, 0.1]).astype(object)
    region[rng.random(rows) < 0.05] = None
    return pd.DataFrame({
        "customer_id": [f"c{i:05d}" for i in range(rows)],
        "age": rng.integers(18, 80, rows),
        "monthly_spend": spend,
        "is_active": rng.random(rows) < 0.7,
        "plan": pd.Categorical(rng.choice(["basic", "pro", "team"], rows)),
        "region": region,
        "event_time": pd.date_range("2026-01-01", periods=rows, freq="37min"),
        "churned": rng.random(rows) < 0.2,
    })


def make_plan(**features):
    features.setdefault("exclude", ["customer_id"])
    return plan_features(FeaturesConfig.model_validate(features), TYPES, "churned")


DERIVED = [
    {"name": "spend_per_age", "expr": "monthly_spend / (age + 1)"},
    {"name": "hour", "expr": "event_time.dt.hour"},
]


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return make_frame()


@pytest.fixture(scope="module")
def state(train) -> FeatureState:
    return fit(make_plan(derived=DERIVED, categorical={"region": {"max_categories": 3}}), train)


def serving_frame() -> pd.DataFrame:
    df = make_frame(rows=60, seed=1)
    df = df.astype({"plan": object, "is_active": object, "age": "float64"})
    df.loc[3, "plan"] = "enterprise"  # unseen
    df.loc[4, "region"] = "mars"  # unseen
    df.loc[5, ["age", "monthly_spend", "plan", "region", "is_active"]] = None
    df.loc[6, "event_time"] = pd.NaT
    return df


# --------------------------------------------------------------------------- no train/serve skew


def test_single_row_gives_identical_features_to_the_batch(state):
    batch = serving_frame()
    full = transform(state, batch)
    for i in range(len(batch)):
        alone = transform(state, batch.iloc[[i]])
        assert np.array_equal(alone.to_numpy(), full.iloc[[i]].to_numpy(), equal_nan=True), i


def test_row_built_from_a_json_record_matches_the_batch(state):
    batch = serving_frame()
    full = transform(state, batch)
    records = json.loads(batch.to_json(orient="records", date_format="iso"))
    for i, record in enumerate(records):
        alone = transform(state, pd.DataFrame([record]))
        assert np.array_equal(alone.to_numpy(), full.iloc[[i]].to_numpy()), (i, record)


def test_wrong_types_count_as_null_and_numeric_strings_parse(state):
    clean = make_frame(rows=3, seed=2).assign(monthly_spend=[12.5, 40.25, 99.0])
    spend = clean["monthly_spend"].tolist()
    messy = clean.assign(age=["abc", *clean["age"].tolist()[1:]],
                         monthly_spend=pd.Series([spend[0], str(spend[1]), [1, 2]], dtype=object))
    nulled = clean.astype({"age": float})
    nulled.loc[0, "age"] = np.nan
    nulled.loc[2, "monthly_spend"] = np.nan
    assert np.array_equal(transform(state, messy).to_numpy(), transform(state, nulled).to_numpy())
    fill = state.numeric["age"]["fill"]
    expected = (fill - state.numeric["age"]["shift"]) / state.numeric["age"]["divide"]
    assert transform(state, messy)["age"].iloc[0] == np.float32(expected)


def test_transform_keeps_index_dtype_order_and_leaves_the_input_alone(state):
    df = serving_frame()
    df.index = np.arange(100, 100 + len(df))[::-1]
    df.loc[df.index[0], "monthly_spend"] = np.inf
    before = df.copy()
    out = transform(state, df)
    pd.testing.assert_frame_equal(df, before)
    assert list(out.columns) == state.output_columns
    assert out.index.equals(df.index)
    assert set(out.dtypes) == {np.dtype("float32")}
    assert not out.isna().any().any()


# --------------------------------------------------------------------------- mergeable fitting


def pieces(df: pd.DataFrame, cuts: list[int]) -> list[pd.DataFrame]:
    bounds = [0, *cuts, len(df)]
    return [df.iloc[a:b] for a, b in itertools.pairwise(bounds)]


def test_fitting_on_pieces_in_any_order_equals_fitting_on_the_whole(train):
    plan = make_plan(derived=DERIVED, numeric={"age": {"impute": "mean", "scale": "minmax"}})
    partials = [fit_partial(plan, piece) for piece in pieces(train, [7, 100, 101, 250])]
    forward = finalize(plan, reduce(merge_partials, partials))
    backward = finalize(plan, reduce(merge_partials, partials[::-1]))
    tree = finalize(plan, merge_partials(
        merge_partials(partials[3], partials[0]), merge_partials(partials[4], merge_partials(
            partials[2], partials[1]))))
    whole = fit(plan, train)
    assert forward.to_dict() == backward.to_dict() == tree.to_dict() == whole.to_dict()
    assert forward.state_id == backward.state_id == whole.state_id


def test_empty_piece_is_a_neutral_element(train):
    plan = make_plan()
    whole = fit(plan, train)
    empty = fit_partial(plan, train.iloc[:0])
    assert finalize(plan, merge_partials(empty, fit_partial(plan, train))).state_id == whole.state_id


def test_large_column_median_is_deterministic_and_close(train):
    rng = np.random.default_rng(3)
    big = make_frame(rows=20_000, seed=3)
    big["monthly_spend"] = rng.normal(50, 10, len(big))
    plan = make_plan()
    partials = [fit_partial(plan, piece) for piece in pieces(big, [3000, 3001, 12000])]
    one = finalize(plan, reduce(merge_partials, partials))
    other = finalize(plan, reduce(merge_partials, [partials[2], partials[0], partials[3], partials[1]]))
    assert one.state_id == other.state_id == fit(plan, big).state_id
    median = one.numeric["monthly_spend"]["stats"]["median"]
    rank = (big["monthly_spend"] < median).mean()
    assert 0.47 < rank < 0.53
    assert one.numeric["age"]["stats"]["median"] == np.median(big["age"])  # few distinct: exact


def test_plan_partials_and_state_pickle(train, state):
    plan = make_plan(derived=DERIVED)
    partial = pickle.loads(pickle.dumps(fit_partial(plan, train)))
    assert finalize(pickle.loads(pickle.dumps(plan)), partial).state_id == fit(plan, train).state_id
    df = serving_frame()
    again = pickle.loads(pickle.dumps(state))
    assert np.array_equal(transform(again, df).to_numpy(), transform(state, df).to_numpy())


# --------------------------------------------------------------------------- the artifact


def test_json_round_trip_keeps_state_id_and_transform(state):
    for text in (json.dumps(state.to_dict()), json.dumps(state.to_dict(), sort_keys=True)):
        loaded = FeatureState.from_dict(json.loads(text))
        assert loaded.state_id == state.state_id
        assert loaded.output_columns == state.output_columns
        assert loaded.input_columns == state.input_columns
        df = serving_frame()
        assert np.array_equal(transform(loaded, df).to_numpy(), transform(state, df).to_numpy())


def test_to_dict_is_plain_json_and_a_copy(state):
    d = state.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    d["numeric"][0]["shift"] = 123.0
    assert state.to_dict() != d
    assert len(state.state_id) == 16 and int(state.state_id, 16) >= 0


def test_state_id_changes_with_data_and_config(train):
    plan = make_plan()
    changed = train.copy()
    changed.loc[0, "age"] += 1
    assert fit(plan, changed).state_id != fit(plan, train).state_id
    other_plan = make_plan(numeric={"age": {"scale": "minmax"}})
    assert fit(other_plan, train).state_id != fit(plan, train).state_id


def test_from_dict_rejects_foreign_or_broken_documents(state):
    with pytest.raises(RaysysError, match="unsupported format"):
        FeatureState.from_dict({"format": "something/9"})
    broken = state.to_dict()
    del broken["numeric"]
    with pytest.raises(RaysysError, match="malformed"):
        FeatureState.from_dict(broken)


def test_input_and_output_columns(state):
    assert state.input_columns == ["age", "monthly_spend", "is_active", "plan", "region", "event_time"]
    assert state.output_columns == [
        "age", "monthly_spend", "is_active", "spend_per_age", "hour",
        "plan=basic", "plan=pro", "plan=team", f"plan={OTHER}",
        "region=apac", "region=eu", "region=us", f"region={OTHER}",
    ]


# --------------------------------------------------------------------------- numeric correctness


def test_standard_scaling_and_median_impute_match_numpy(train):
    state = fit(make_plan(), train)
    x = train["monthly_spend"].to_numpy()
    seen = x[~np.isnan(x)]
    stats = state.numeric["monthly_spend"]["stats"]
    assert stats["count"] == seen.size
    assert stats["mean"] == pytest.approx(np.mean(seen), rel=1e-14)
    assert stats["std"] == pytest.approx(np.std(seen), rel=1e-12)
    assert (stats["min"], stats["max"], stats["median"]) == (seen.min(), seen.max(), np.median(seen))
    filled = np.where(np.isnan(x), np.median(seen), x)
    expected = ((filled - np.mean(seen)) / np.std(seen)).astype(np.float32)
    np.testing.assert_allclose(transform(state, train)["monthly_spend"], expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("impute", "fill"), [("mean", "mean"), ("median", "median"), ("constant", -1.0)]
)
def test_minmax_scaling_with_each_imputation(train, impute, fill):
    cfg = {"impute": impute, "fill_value": -1.0, "scale": "minmax"}
    out = transform(fit(make_plan(numeric={"monthly_spend": cfg}), train), train)["monthly_spend"]
    x = train["monthly_spend"].to_numpy()
    seen = x[~np.isnan(x)]
    value = {"mean": np.mean(seen), "median": np.median(seen)}.get(fill, fill)
    expected = (np.where(np.isnan(x), value, x) - seen.min()) / (seen.max() - seen.min())
    np.testing.assert_allclose(out, expected.astype(np.float32), rtol=1e-6, atol=1e-7)


def test_impute_none_and_scale_none_keep_raw_values_and_nulls(train):
    plan = make_plan(numeric={"monthly_spend": {"impute": "none", "scale": "none"}})
    out = transform(fit(plan, train), train)["monthly_spend"].to_numpy()
    x = train["monthly_spend"].to_numpy()
    assert np.array_equal(np.isnan(out), np.isnan(x))
    assert np.array_equal(out[~np.isnan(x)], x[~np.isnan(x)].astype(np.float32))


def test_constant_column_scales_to_zero_and_bool_reads_as_zero_one(train):
    df = train.assign(age=42, is_active=train["is_active"])
    state = fit(make_plan(numeric={"is_active": {"scale": "none"}}), df)
    out = transform(state, df)
    assert state.numeric["age"]["divide"] == 1.0 and (out["age"] == 0).all()
    assert np.array_equal(out["is_active"], df["is_active"].astype(np.float32))


def test_all_null_column_falls_back_to_fill_value(train):
    df = train.assign(monthly_spend=np.nan)
    plan = make_plan(numeric={"monthly_spend": {"impute": "mean", "fill_value": 7.0}})
    state = fit(plan, df)
    assert state.numeric["monthly_spend"]["stats"]["mean"] is None
    assert (transform(state, df)["monthly_spend"] == 7.0).all()


# --------------------------------------------------------------------------- categorical


def categorical_frame() -> pd.DataFrame:
    values = ["b"] * 5 + ["a"] * 3 + ["c"] * 3 + ["d"] * 1 + [None] * 4
    df = make_frame(rows=len(values))
    df["region"] = values
    return df


def test_top_categories_with_ties_broken_by_value():
    state = fit(make_plan(categorical={"region": {"max_categories": 2}}), categorical_frame())
    assert state.categorical["region"]["categories"] == ["a", "b"]  # a beats c on the 3-3 tie


def test_onehot_maps_rare_unseen_and_null_to_other():
    state = fit(make_plan(categorical={"region": {"max_categories": 2}}), categorical_frame())
    df = make_frame(rows=5).assign(region=["a", "b", "c", "zzz", None])
    cols = ["region=a", "region=b", f"region={OTHER}"]
    out = transform(state, df)[cols].to_numpy()
    assert np.array_equal(out, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]])


def test_other_column_exists_even_when_every_category_is_kept(train):
    state = fit(make_plan(), train)
    out = transform(state, train)
    assert (out[f"plan={OTHER}"] == 0).all()
    plan_cols = [c for c in state.output_columns if c.startswith("plan=")]
    assert (out[plan_cols].sum(axis=1) == 1).all()


def test_ordinal_codes_sorted_categories_and_unknown_gets_k():
    plan = make_plan(categorical={"region": {"encode": "ordinal", "max_categories": 3}})
    state = fit(plan, categorical_frame())
    assert "region" in state.output_columns
    df = make_frame(rows=5).assign(region=["a", "b", "c", "d", None])
    assert transform(state, df)["region"].tolist() == [0.0, 1.0, 2.0, 3.0, 3.0]


def test_integer_category_values_read_the_same_with_or_without_nulls():
    df = make_frame(rows=6).assign(region=[1, 2, 2, 3, 3, 3])
    state = fit(make_plan(categorical={"region": {}}), df)
    with_null = df.assign(region=[1.0, 2.0, np.nan, 3.0, 3.0, 3.0])
    expected = transform(state, df).to_numpy()
    expected[2] = transform(state, df.assign(region=[None] * 6)).to_numpy()[2]
    assert np.array_equal(transform(state, with_null).to_numpy(), expected)


# --------------------------------------------------------------------------- derived features


def test_derived_features_are_computed_then_imputed_and_scaled(train):
    derived = [*DERIVED, {"name": "ratio2", "expr": "spend_per_age * 2"}]
    plan = make_plan(derived=derived, numeric={"spend_per_age": {"scale": "none", "impute": "none"},
                                               "hour": {"scale": "none"}})
    out = transform(fit(plan, train), train)
    raw = train["monthly_spend"] / (train["age"] + 1)
    np.testing.assert_array_equal(out["spend_per_age"], raw.astype(np.float32))
    np.testing.assert_array_equal(out["hour"], train["event_time"].dt.hour.astype(np.float32))
    seen = (raw * 2).dropna()  # statistics come from the observed values, before imputation
    expected = ((raw * 2).fillna(seen.median()) - seen.mean()) / seen.std(ddof=0)
    np.testing.assert_allclose(out["ratio2"], expected, rtol=1e-5)


def test_derived_division_by_zero_is_treated_as_null(train):
    plan = make_plan(derived=[{"name": "inv", "expr": "1 / (age - 30)"}],
                     numeric={"inv": {"impute": "constant", "fill_value": -9.0, "scale": "none"}})
    df = train.assign(age=30)
    assert (transform(fit(plan, train), df)["inv"] == -9.0).all()


# --------------------------------------------------------------------------- planning


def test_auto_plan_skips_label_timestamp_and_excluded_columns():
    plan = make_plan()
    assert list(plan.numeric) == ["age", "monthly_spend", "is_active"]
    assert list(plan.categorical) == ["plan", "region"]
    assert list(plan.inputs) == ["age", "monthly_spend", "is_active", "plan", "region"]
    with_id = plan_features(FeaturesConfig(), TYPES, "churned")
    assert "customer_id" in with_id.categorical and "churned" not in with_id.numeric
    assert "churned" in plan_features(FeaturesConfig(), TYPES, None).numeric


def test_explicit_plan_overrides_and_auto_off_uses_only_explicit():
    plan = make_plan(categorical={"age": {"encode": "ordinal"}})
    assert "age" in plan.categorical and "age" not in plan.numeric
    explicit = make_plan(auto=False, numeric={"age": {"scale": "none"}}, derived=DERIVED[:1])
    assert list(explicit.numeric) == ["age", "spend_per_age"]
    assert explicit.categorical == {}
    assert list(explicit.inputs) == ["age", "monthly_spend"]
    assert explicit.numeric["age"].scale == "none"


def test_timestamp_only_used_by_a_derived_feature_is_an_input():
    plan = make_plan(auto=False, derived=DERIVED[1:])
    assert list(plan.inputs) == ["event_time"] and list(plan.numeric) == ["hour"]


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({"numeric": {"foo": {}}}, r"^features\.numeric\.foo: no such column$"),
        ({"categorical": {"foo": {}}}, r"^features\.categorical\.foo: no such column$"),
        ({"numeric": {"churned": {}}}, r"features\.numeric\.churned: is the label"),
        ({"numeric": {"customer_id": {}}}, r"features\.numeric\.customer_id: .*excluded"),
        ({"numeric": {"event_time": {}}}, r"features\.numeric\.event_time: timestamp"),
        ({"numeric": {"region": {}}}, r"features\.numeric\.region: is a string column"),
        ({"numeric": {"age": {}}, "categorical": {"age": {}}}, r"categorical\.age: also in"),
        ({"derived": DERIVED[:1], "categorical": {"spend_per_age": {}}}, r"derived.*are numeric"),
        ({"derived": [{"name": "x", "expr": "foo + 1"}]},
         r"^features\.derived\[0\]\.expr: no such column 'foo'$"),
        ({"derived": [{"name": "x", "expr": "age +"}]}, r"derived\[0\]\.expr: invalid expression"),
        ({"derived": [*DERIVED, {"name": "x", "expr": "churned * 2"}]},
         r"^features\.derived\[2\]\.expr: uses the label 'churned'$"),
        ({"derived": [{"name": "x", "expr": "region"}]},
         r"derived\[0\]\.expr: does not give a number \('region' is a string column\)"),
        ({"derived": [{"name": "x", "expr": "3"}]}, r"derived\[0\]\.expr: uses no column"),
        ({"derived": [{"name": "age", "expr": "age * 2"}]},
         r"^features\.derived\[0\]\.name: 'age' clashes"),
        ({"derived": [{"name": "x", "expr": "@secret + age"}]}, r"derived\[0\]\.expr: invalid"),
    ],
)
def test_config_errors_name_the_field(features, message):
    with pytest.raises(ConfigError, match=message):
        make_plan(**features)


def test_missing_input_column_at_transform_names_it(state, train):
    with pytest.raises(RaysysError, match="missing input column.*'monthly_spend'"):
        transform(state, train.drop(columns=["monthly_spend"]))
    with pytest.raises(RaysysError, match="'event_time'"):
        fit_partial(make_plan(derived=DERIVED), train.drop(columns=["event_time"]))


def test_a_numeric_column_holding_text_reads_as_null_in_a_derived_feature(train):
    plan = make_plan(derived=[{"name": "x", "expr": "age * 2"}],
                     numeric={"x": {"impute": "none", "scale": "none"}})
    out = transform(fit(plan, train), train.assign(age="abc"))
    assert out["x"].isna().all()


def test_arrow_backed_batches_give_the_same_features_and_state(state, train):
    arrow = pa.Table.from_pandas(train).to_pandas(types_mapper=pd.ArrowDtype)
    assert np.array_equal(transform(state, arrow).to_numpy(), transform(state, train).to_numpy())
    plan = make_plan(derived=DERIVED)
    assert fit(plan, arrow).state_id == fit(plan, train).state_id


def test_zero_row_batch_gives_an_empty_frame_with_all_columns(state, train):
    out = transform(state, train.iloc[:0])
    assert out.shape == (0, len(state.output_columns))


# ------------------------------------------------------------------------ expressions run no code


def test_a_method_call_in_a_derived_expression_is_refused_and_runs_nothing(tmp_path):
    target = tmp_path / "written"
    expr = f"monthly_spend.to_pickle('{target}')"
    with pytest.raises(ConfigError, match=r"^features\.derived\[1\]\.expr: method calls are "
                                          r"not allowed: monthly_spend\.to_pickle\('/"):
        make_plan(derived=[DERIVED[0], {"name": "x", "expr": expr}])
    assert not target.exists()


def test_a_tampered_state_file_is_refused_on_load_and_runs_nothing(state, tmp_path):
    target = tmp_path / "written"
    document = state.to_dict()
    document["derived"][1]["expr"] = f"monthly_spend.to_pickle('{target}') + age"
    with pytest.raises(RaysysError, match=r"^feature state: features\.derived\[1\]\.expr: "
                                          r"method calls are not allowed"):
        FeatureState.from_dict(json.loads(json.dumps(document)))
    assert not target.exists()


def test_every_allowed_construct_gives_the_same_features_offline_and_online(train):
    derived = [
        {"name": "a", "expr": "log1p(monthly_spend) - sqrt(abs(age - 40)) ** 2 // 3 % 7"},
        {"name": "b", "expr": "where((age >= 30) and not (monthly_spend < 50), 1, -1.5e0)"},
        {"name": "c", "expr": "clip(maximum(age, monthly_spend), 20, 60) + minimum(a, 0)"},
        {"name": "d", "expr": "(18 < age <= 40) | ~is_active & (event_time.dt.dayofweek == 6)"},
        {"name": "e", "expr": "isnan(monthly_spend) + round(exp(-age / 100) * 3) * floor(b)"},
    ]
    state = fit(make_plan(derived=derived), train)
    batch = serving_frame()
    full = transform(state, batch)
    records = json.loads(batch.to_json(orient="records", date_format="iso"))
    for i, record in enumerate(records):  # the online path: one record as lists, no frame
        alone = transform_values(state, {k: [v] for k, v in record.items()})
        assert np.array_equal(alone, full.iloc[[i]].to_numpy()), (i, record)


def test_derived_features_compute_what_numpy_computes(train):
    derived = [{"name": "ratio", "expr": "log1p(monthly_spend) / (age + 1)"},
               {"name": "older", "expr": "age > 40"},
               {"name": "both", "expr": "older and is_active"}]
    raw = {"impute": "none", "scale": "none"}
    state = fit(make_plan(derived=derived, numeric=dict.fromkeys(["ratio", "older", "both"], raw)),
                train)
    out = transform(state, train)
    spend, age = train["monthly_spend"].to_numpy(), train["age"].to_numpy()
    np.testing.assert_array_equal(out["ratio"], (np.log1p(spend) / (age + 1)).astype(np.float32))
    np.testing.assert_array_equal(out["older"], (age > 40).astype(np.float32))
    np.testing.assert_array_equal(out["both"], ((age > 40) & train["is_active"]).astype(np.float32))
    with_null = transform(state, train.assign(age=np.nan))  # a null in, a null out
    assert with_null[["ratio", "older", "both"]].isna().all().all()
