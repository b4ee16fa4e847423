"""``POST /v1/feedback`` and ``raysys feedback`` on the served model (breast cancer: classes 0 and 1).

Labels sent over HTTP land in ``logs/feedback/<model>/`` once each; hostile bodies get a 4xx
naming the field, never a 5xx; the CLI, run as a user would in a clean shell, writes a good
file and refuses a bad one whole.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from raysys.serving.feedback import read_feedback_log
from tests.serving.test_hostile_input import (
    SETTINGS,
    assert_answered,
    field_values,
    hostile,
    mutated,
    post,
)
from tests.serving.test_server import raw_rows
from tests.user_shell import clean_env

RAYSYS = Path(sys.executable).with_name("raysys")


def labelled(rs, prefix: str) -> pd.DataFrame:
    """The feedback log's rows whose request id starts with ``prefix``."""
    frame = read_feedback_log(rs.storage, rs.models.name)
    return frame[frame["_request_id"].str.startswith(prefix)] if not frame.empty else frame


def wait_for_rows(rs, prefix: str, count: int, timeout_s: float = 60) -> pd.DataFrame:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        frame = labelled(rs, prefix)
        if len(frame) >= count:
            return frame
        time.sleep(0.5)
    return labelled(rs, prefix)


def test_labels_for_answered_requests_are_accepted_and_logged_once(served):
    rs, url = served
    answer = requests.post(f"{url}/v1/predict", json={"records": raw_rows(rs, 2)},
                           headers={"x-request-id": "http-fb-1"}, timeout=30).json()
    labels = [{"request_id": "http-fb-1", "row": i, "label": p} for i, p in enumerate(answer["predictions"])]
    many = requests.post(f"{url}/v1/feedback", json=labels, timeout=30)
    assert many.status_code == 202 and many.json() == {"accepted": 2}, many.text
    one = requests.post(f"{url}/v1/feedback", json={"request_id": "http-fb-2", "label": "1"}, timeout=30)
    assert one.status_code == 202 and one.json() == {"accepted": 1}
    frame = wait_for_rows(rs, "http-fb-", 3)
    pairs = Counter(zip(frame["_request_id"], frame["_row"]))
    assert pairs == Counter({("http-fb-1", 0): 1, ("http-fb-1", 1): 1, ("http-fb-2", 0): 1}), frame
    logged = dict(zip(zip(frame["_request_id"], frame["_row"]), frame["_label"]))
    assert logged[("http-fb-1", 0)] == str(answer["predictions"][0]) and logged[("http-fb-2", 0)] == "1"
    assert set(frame["_source"]) == {"http"}
    time.sleep(1.0)  # a later flush must not write them again
    assert len(labelled(rs, "http-fb-")) == 3


def test_bad_feedback_is_a_4xx_naming_the_field(served):
    _, url = served
    cases = [({"request_id": "r", "label": 2}, 422, "label"),
             ([{"request_id": "r", "label": 0}, {"request_id": "r", "row": -1, "label": 0}], 422, "[1].row"),
             ({"label": 1}, 422, "request_id"),
             ({"request_id": "x" * 5000, "label": 1}, 422, "request_id"),
             ([{"request_id": "r", "label": 1}] * 1001, 413, "body")]  # serve.max_records: 1000
    for body, status, field in cases:
        answer = requests.post(f"{url}/v1/feedback", json=body, timeout=30)
        assert (answer.status_code, answer.json()["field"]) == (status, field), answer.text
    malformed = requests.post(f"{url}/v1/feedback", data=b"{oops", headers={"content-type": "application/json"},
                              timeout=30)
    assert malformed.status_code == 400 and malformed.json()["field"] == "body"
    huge = requests.post(f"{url}/v1/feedback", data=b" " * (2 << 20), timeout=30)
    assert huge.status_code == 413 and huge.json()["field"] == "body"
    spec = requests.get(f"{url}/openapi.json", timeout=30).json()["paths"]["/v1/feedback"]["post"]
    assert "202" in spec["responses"] and spec["requestBody"]["content"]["application/json"]["schema"]["anyOf"]


def feedback_bodies() -> st.SearchStrategy:
    """One label or a list, each a valid one with hostile values, or junk."""
    valid = {"request_id": "hostile", "row": 0, "label": 1}
    item = mutated(valid, [*valid, "extra"], field_values)
    return st.one_of(item, st.lists(st.one_of(item, st.just(valid)), min_size=1, max_size=3), hostile)


@settings(max_examples=25, **SETTINGS)
@given(body=feedback_bodies())
def test_no_feedback_body_gets_a_5xx(served, body):
    _, url = served
    assert_answered(post(f"{url}/v1/feedback", body))


def test_feedback_is_still_accepted_after_the_hostile_bodies(served):
    _, url = served
    answer = requests.post(f"{url}/v1/feedback", json={"request_id": "after", "label": 0}, timeout=30)
    assert answer.status_code == 202


def cli(rs, env, *args: str) -> tuple[int, dict, str]:
    done = subprocess.run([str(RAYSYS), "feedback", *args, "-c", str(rs.config_path), "--json"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, json.loads(lines[-1]) if lines else {}, done.stderr


def test_cli_feedback_writes_a_good_file_and_refuses_a_bad_one_whole(served, tmp_path):
    rs, _ = served
    env = clean_env(tmp_path / "home")
    good = tmp_path / "labels.csv"
    pd.DataFrame({"request_id": ["bulk-1", "bulk-1", "bulk-2"], "row": [0, 1, 0], "label": [1, 0, 1]}).to_csv(
        good, index=False)
    code, result, stderr = cli(rs, env, "--input", str(good))
    assert code == 0 and result["accepted"] == 3, stderr
    frame = labelled(rs, "bulk-")
    assert sorted(zip(frame["_request_id"], frame["_row"], frame["_label"])) == [
        ("bulk-1", 0, "1"), ("bulk-1", 1, "0"), ("bulk-2", 0, "1")]
    assert set(frame["_source"]) == {"bulk"}

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"request_id": "bulk-3", "label": 1}\n{"request_id": "bulk-4", "label": "maybe"}\n')
    code, result, stderr = cli(rs, env, "--input", str(bad))
    assert code == 1 and "row 2, column label" in result["error"] and "maybe" in result["error"]
    assert stderr.strip().startswith("error:") and len(stderr.strip().splitlines()) == 1
    missing = tmp_path / "missing.csv"
    missing.write_text("id,label\nx,1\n")
    code, result, _ = cli(rs, env, "--input", str(missing))
    assert code == 1 and "missing column(s) request_id" in result["error"]
    assert len(labelled(rs, "bulk-")) == 3  # nothing of the bad files was written
