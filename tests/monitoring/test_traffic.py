"""The traffic driver: steady requests with delayed labels against a really served model."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from raysys.config import DriftConfig, SyntheticSource
from raysys.data import synthetic
from raysys.monitoring.traffic import TrafficDriver, TrafficTally, synthetic_stream
from raysys.runtime import free_port

DRIFTING = SyntheticSource(kind="synthetic", rows=1000, seed=3,
                           drift={"start_row": 1000, "covariate": 1.0, "concept": 1.0})


# ---------------------------------------------------------------------------- pure parts


def test_synthetic_stream_continues_the_source_and_can_drop_its_drift():
    drifted, steady = synthetic_stream(DRIFTING, 1000), synthetic_stream(DRIFTING, 1000, drifted=False)
    whole = drifted(0, 3000)
    pd.testing.assert_frame_equal(pd.concat([drifted(0, 1200), drifted(1200, 3000)], ignore_index=True), whole)
    assert whole["customer_id"].tolist() == list(range(1000, 4000))
    calm = steady(0, 3000)
    assert calm["customer_id"].tolist() == whole["customer_id"].tolist()
    longer = DRIFTING.model_copy(update={"rows": 4000})
    pd.testing.assert_frame_equal(whole, synthetic.generate_rows(longer, 1000, 4000))
    no_drift = longer.model_copy(update={"drift": DriftConfig()})
    pd.testing.assert_frame_equal(calm, synthetic.generate_rows(no_drift, 1000, 4000))
    assert (whole["monthly_spend"] != calm["monthly_spend"]).mean() > 0.9  # covariate drift


def test_tally_scores_answers_per_phase_and_version_and_keeps_few_error_messages():
    tally = TrafficTally()
    tally.sent = 4
    tally.answer("steady", 1, [1, 0, 1], [1, 1, 1], 5.0)
    tally.answer("drifted", 1, [0], [1], 7.0)
    tally.answer("drifted", 2, ["1"], [1], 9.0)
    for i in range(50):
        tally.error("predict", f"HTTP 503: busy {i % 30}")
    tally.error("feedback", "HTTP 422: label")
    out = tally.to_dict()
    assert out["quality"] == {"steady": {"1": {"records": 3, "accuracy": 2 / 3}},
                              "drifted": {"1": {"records": 1, "accuracy": 0.0},
                                          "2": {"records": 1, "accuracy": 1.0}}}
    assert (out["answered"], out["records"], out["failed"], out["labels_failed"]) == (3, 5, 50, 1)
    assert len(out["errors"]) == 20 and sum(out["errors"].values()) == 40  # 20 messages kept; all counted above
    assert out["latency_ms"]["p50"] == 7.0
    assert tally.records_in("drifted") == {1: 1, 2: 1}


def test_driver_rejects_impossible_settings():
    with pytest.raises(ValueError, match="rate"):
        TrafficDriver("http://127.0.0.1:1", synthetic_stream(DRIFTING, 0), ["age"], "churned", rate=0)


# ---------------------------------------------------------------------------- against a served model


@pytest.fixture(scope="module")
def cancer_rows(served):
    """(url, row source cycling the test split, the model's inputs, label, system)."""
    rs, url = served
    frame = rs.data.read("latest", split="test").to_pandas()
    inputs = rs.models.load("champion").state.input_columns

    def rows(start: int, stop: int) -> pd.DataFrame:
        return frame.iloc[[i % len(frame) for i in range(start, stop)]].reset_index(drop=True)

    return url, rows, inputs, rs.config.data.label, rs


def run_until(driver: TrafficDriver, answered: int, limit_s: float = 120.0) -> dict:
    """Run the driver until it has ``answered`` + failed requests (or a limit), then stop it."""
    driver.start()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        stats = driver.stats()
        if stats["answered"] + stats["failed"] >= answered:
            break
        time.sleep(0.2)
    return driver.stop()


def test_driver_sends_steadily_and_counts_every_answer(cancer_rows):
    url, rows, inputs, label, rs = cancer_rows
    driver = TrafficDriver(url, rows, inputs, label, rate=40, clients=3, records_per_request=2,
                           feedback=False)
    stats = run_until(driver, 30)
    assert stats["failed"] == 0, stats["errors"]
    assert stats["answered"] == stats["requests"] >= 30 and stats["records"] == 2 * stats["answered"]
    scored = stats["quality"]["steady"]
    champion = rs.serving.plan().champion
    assert list(scored) == [str(champion)] and scored[str(champion)]["records"] == stats["records"]
    assert scored[str(champion)]["accuracy"] > 0.8  # the served model is good on its test split
    assert stats["latency_ms"]["p99"] >= stats["latency_ms"]["p50"] > 0


def test_driver_switches_phase_and_source_mid_stream(cancer_rows):
    url, rows, inputs, label, _ = cancer_rows
    flipped = lambda start, stop: rows(start, stop).assign(**{label: lambda f: 1 - f[label]})
    driver = TrafficDriver(url, rows, inputs, label, rate=40, clients=2, feedback=False)
    driver.start()
    while driver.stats()["answered"] < 10:
        time.sleep(0.1)
    driver.switch(flipped, "flipped")
    while sum(driver.records_in("flipped").values()) < 10:
        time.sleep(0.1)
    stats = driver.stop()
    assert [p["phase"] for p in stats["phases"]] == ["steady", "flipped"]
    steady, flipped_q = (next(iter(stats["quality"][p].values()))["accuracy"] for p in ("steady", "flipped"))
    assert steady > 0.8 and flipped_q < 0.2  # the same model scored against flipped labels


def test_failures_are_counted_not_retried(cancer_rows):
    url, rows, inputs, label, _ = cancer_rows
    missing_input = TrafficDriver(url, rows, inputs[1:], label, rate=40, clients=2, feedback=False)
    stats = run_until(missing_input, 8)
    assert stats["answered"] == 0 and stats["failed"] == stats["requests"] >= 8
    assert any(inputs[0] in message and "HTTP 422" in message for message in stats["errors"]), stats["errors"]
    nobody = TrafficDriver(f"http://127.0.0.1:{free_port()}", rows, inputs, label, rate=40, clients=2,
                           feedback=False)
    stats = run_until(nobody, 8)
    assert stats["answered"] == 0 and stats["failed"] == stats["requests"] >= 8
    assert all(message.startswith("predict: ConnectError") for message in stats["errors"]), stats["errors"]


def test_labels_follow_each_answer_after_the_delay(cancer_rows):
    import requests

    url, rows, inputs, label, _ = cancer_rows
    if "/v1/feedback" not in requests.get(f"{url}/openapi.json", timeout=30).json()["paths"]:
        pytest.skip("the serving app has no /v1/feedback route yet")
    driver = TrafficDriver(url, rows, inputs, label, rate=30, clients=2, records_per_request=3,
                           label_delay_s=0.5)
    stats = run_until(driver, 15)
    assert stats["failed"] == 0 and stats["labels_failed"] == 0, stats["errors"]
    assert stats["labels_sent"] == stats["records"] == 3 * stats["answered"]  # every label, once, on stop
