"""Column aggregates raysys computes without Ray Data's shuffle: the same answers as pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raysys.data.service import distinct_values, mean_std


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    values = rng.normal(5.0, 2.0, 1000)
    values[::97] = np.nan
    return pd.DataFrame({"x": values, "label": rng.choice(["a", "b", "c"], 1000)})


def test_distinct_values_and_moments_over_many_blocks_match_pandas(ray_session, frame):
    dataset = ray_session.data.from_pandas([frame.iloc[i:i + 100] for i in range(0, 1000, 100)])
    assert sorted(distinct_values(dataset, "label")) == ["a", "b", "c"]
    mean, std = mean_std(dataset, "x")
    assert mean == pytest.approx(frame["x"].mean(), rel=1e-9)  # pandas skips NaN, and ddof=1, like Ray Data
    assert std == pytest.approx(frame["x"].std(), rel=1e-9)


def test_moments_of_no_values_are_none_and_of_one_value_have_no_spread(ray_session):
    empty = ray_session.data.from_pandas(pd.DataFrame({"x": [np.nan, np.nan]}))
    assert mean_std(empty, "x") == (None, None)
    assert mean_std(ray_session.data.from_pandas(pd.DataFrame({"x": [4.0]})), "x") == (4.0, None)


def test_moments_of_values_far_from_zero_keep_their_spread(ray_session):
    values = 1e9 + np.arange(1000, dtype=float) % 7  # a sum of squares would cancel to noise here
    dataset = ray_session.data.from_pandas([pd.DataFrame({"x": values[i:i + 250]}) for i in range(0, 1000, 250)])
    mean, std = mean_std(dataset, "x")
    assert mean == pytest.approx(values.mean(), rel=1e-12) and std == pytest.approx(values.std(ddof=1), rel=1e-9)
