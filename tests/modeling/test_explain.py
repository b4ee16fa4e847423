"""Attributions and permutation importance on a small network trained here (plain torch, no Ray)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raysys.config import CategoricalFeature, DerivedFeature, FeaturesConfig, ModelConfig
from raysys.data import features
from raysys.modeling.artifacts import TrainSpec, encode_labels, state_dict_to_bytes
from raysys.modeling.explain import explain, permutation_importance, raw_shares
from raysys.modeling.models import array_to_tensors, build_model, model_inputs, output_size
from raysys.modeling.predict import LoadedModel, model_files

TYPES = {"x": "float", "noise": "float", "plan": "category", "tier": "category", "y": "int"}


def synthetic(rows: int, seed: int) -> pd.DataFrame:
    """y depends on x, plan and tier; ``noise`` plays no part."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.normal(size=rows), "noise": rng.normal(size=rows),
                          "plan": rng.choice(["a", "b", "c"], rows), "tier": rng.choice(["lo", "hi"], rows)})
    score = 2.5 * frame["x"] + 2.0 * (frame["plan"] == "a") - 1.5 * (frame["tier"] == "hi")
    frame["y"] = (score + rng.normal(scale=0.3, size=rows) > 0).astype(int)
    return frame


def fitted_model(task: str = "binary") -> LoadedModel:
    """An MLP over one-hot ``plan`` and an embedding of ``tier``, fitted with Adam in-process."""
    import torch

    frame = synthetic(2000, 0)
    cfg = FeaturesConfig(categorical={"tier": CategoricalFeature(encode="ordinal")})
    state = features.fit(features.plan_features(cfg, TYPES, "y"), frame)
    inputs, model_cfg = model_inputs(state), ModelConfig(hidden=[16], dropout=0.0, embedding_dim=2)
    classes = [0, 1]
    width = output_size(task, 2)
    torch.manual_seed(0)
    network = build_model(model_cfg, inputs, width)
    x_num, x_cat = array_to_tensors(features.transform_values(state, frame), state.output_columns, inputs)
    y = torch.from_numpy(np.asarray(encode_labels(frame["y"], classes)))
    optimizer = torch.optim.Adam(network.parameters(), lr=0.03)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small net: threads only contend with each other
    try:
        for _ in range(250):
            optimizer.zero_grad()
            logits = network(x_num, x_cat)
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits.reshape(-1), y.float())
                    if task == "binary" else torch.nn.functional.cross_entropy(logits, y))
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    spec = TrainSpec(model=model_cfg.model_dump(), train={}, inputs=inputs.to_dict(), task=task, label="y",
                     classes=classes)
    return LoadedModel(model_files(spec, state, state_dict_to_bytes(network.state_dict())))


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return fitted_model()


def test_integrated_gradients_sum_to_output_minus_baseline(model):
    rows = synthetic(40, 1).drop(columns="y")
    result = explain(model, rows, "integrated_gradients", steps=64)
    assert [set(a) for a in result.attributions] == [{"x", "noise", "plan", "tier"}] * 40  # raw columns only
    totals = np.array([sum(a.values()) for a in result.attributions])
    gaps = np.array(result.outputs) - np.array(result.baselines)
    np.testing.assert_allclose(totals, gaps, atol=0.01)
    np.testing.assert_allclose(result.outputs, model.predict(rows), atol=1e-6)  # the served probability
    assert np.abs(gaps).max() > 0.3  # the records are far from the baseline: the check has teeth


def test_an_irrelevant_column_gets_almost_nothing(model):
    rows = synthetic(200, 2).drop(columns="y")
    for method in ("integrated_gradients", "gradient_x_input"):
        attributions = pd.DataFrame(explain(model, rows, method, steps=16).attributions).abs().mean()
        assert attributions["noise"] < 0.1 * attributions["x"], (method, attributions.to_dict())
        assert attributions["plan"] > 2 * attributions["noise"] and attributions["tier"] > 2 * attributions["noise"]


def test_multiclass_explains_the_predicted_class():
    model = fitted_model("multiclass")
    rows = synthetic(20, 3).drop(columns="y")
    result = explain(model, rows, steps=256)  # a two-way softmax of a ReLU net bends sharply
    probabilities = model.predict(rows)
    np.testing.assert_allclose(result.outputs, probabilities.max(axis=1), atol=1e-6)
    totals = np.array([sum(a.values()) for a in result.attributions])
    np.testing.assert_allclose(totals, np.array(result.outputs) - result.baselines, atol=0.01)


def test_derived_features_are_shared_among_the_columns_they_read():
    cfg = FeaturesConfig(derived=[DerivedFeature(name="ratio", expr="x / (noise + 10)"),
                                  DerivedFeature(name="twice", expr="ratio * 2")])
    state = features.fit(features.plan_features(cfg, TYPES, "y"), synthetic(50, 0))
    shares = raw_shares(state)
    assert shares["ratio"] == {"noise": 0.5, "x": 0.5} and shares["twice"] == {"noise": 0.5, "x": 0.5}
    assert shares["plan=a"] == shares["plan=__other__"] == {"plan": 1.0} and shares["x"] == {"x": 1.0}


def test_permutation_importance_ranks_the_signal_above_the_noise(model):
    result = permutation_importance(model, synthetic(600, 4), repeats=3, seed=0)
    importance = result["importance"]
    assert result["metric"] == "log_loss" and result["rows"] == 600 and next(iter(importance)) == "x"
    assert importance["x"]["mean"] > 0.3 and abs(importance["noise"]["mean"]) < 0.02
    assert importance["plan"]["mean"] > 10 * abs(importance["noise"]["mean"])


@pytest.mark.parametrize(("explain", "field"), [
    ({"method": "shap"}, "explain.method"), ({"steps": 0}, "explain.steps"), ({"steps": "many"}, "explain.steps"),
    ({"permutation_repeats": -1}, "explain.permutation_repeats"), ({"importance_rows": 1}, "explain.importance_rows"),
    ({"baseline": "zero"}, "explain.baseline: unknown field"),
])
def test_bad_explain_settings_are_config_errors_naming_the_field(explain, field):
    from raysys.config import parse_config
    from raysys.errors import ConfigError

    data = {"name": "x", "source": {"kind": "sklearn", "dataset": "wine"}, "label": "target", "task": "multiclass"}
    with pytest.raises(ConfigError, match=f"^config: {field}"):
        parse_config({"data": data, "explain": explain})
