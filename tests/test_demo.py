"""The demo: its config overlay, the timeline it builds from the audit log and windows, its CLI.

The full loop (``raysys demo --json`` on the quickstart config) takes minutes: it runs only with
``RAYSYS_TEST_DEMO=1`` (``RAYSYS_TEST_DEMO=1 pytest tests/test_demo.py -k full``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from raysys import audit
from raysys.config import load_config
from raysys.demo import (
    DEMO_OVERRIDES,
    STEPS,
    Outcome,
    audit_marks,
    demo_config,
    first_detection,
    merge,
    problems,
    timeline,
)
from raysys.storage import Storage
from tests.user_shell import BIN, clean_env

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
JSON_KEYS = {"timeline", "requests", "failed_requests", "champion_before", "champion_after", "quality_before",
             "quality_after", "time_to_recover_s"}


def test_merge_lays_nested_settings_over_the_base():
    base = {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "f": [1]}
    assert merge(base, {"a": {"c": {"d": 9}}, "f": [2], "g": None}) == \
        {"a": {"b": 1, "c": {"d": 9, "e": 3}}, "f": [2], "g": None}
    assert base["a"]["c"]["d"] == 2  # the base is not changed


def test_demo_config_overrides_only_the_loop_settings_of_the_users_config(tmp_path):
    user = load_config(QUICKSTART)
    config = demo_config(user, str(tmp_path / "demo-x"), 18123)
    assert config.storage.root == str(tmp_path / "demo-x") and config.serve.port == 18123
    assert config.monitor.window.rows == DEMO_OVERRIDES["monitor"]["window"]["rows"]
    assert config.monitor.release.min_labelled == DEMO_OVERRIDES["monitor"]["release"]["min_labelled"]
    assert config.serve.canary_percent == DEMO_OVERRIDES["serve"]["canary_percent"]
    assert config.monitor.drift == user.monitor.drift  # what the demo does not set stays the user's
    assert config.data == user.data and config.model == user.model and config.train == user.train
    assert config.data.source.drift.covariate > 0 and config.data.source.drift.concept > 0
    assert load_config(QUICKSTART) == user  # the file is left as it is


def test_timeline_comes_from_the_monitors_audit_events_after_the_drift(tmp_path):
    storage = Storage.open(str(tmp_path))
    audit.record(storage, "monitor.alert.open", {"incident": "old"}, actor="raysys-monitor")  # before the drift
    time.sleep(0.01)
    onset = datetime.now(timezone.utc).timestamp()
    for action in ("monitor.alert.open", "monitor.retrain.start", "monitor.retrain.done", "monitor.alert.open",
                   "monitor.release.canary", "monitor.release.promote", "deploy.promote"):
        audit.record(storage, action, {"incident": "i1"}, actor="raysys-monitor")
        time.sleep(0.01)
    events = audit.read_audit(storage)
    marks = audit_marks(events, onset)
    assert list(marks) == ["alert", "retrain started", "retrain done", "canary", "promoted"]
    first_alert = next(e for e in events[1:] if e["action"] == "monitor.alert.open")
    assert marks["alert"] == datetime.fromisoformat(first_alert["at"]).timestamp()  # the first, not the repeat
    steps = timeline({**marks, "drift onset": onset}, onset - 5.0)
    assert [s["step"] for s in steps] == [s for s in STEPS if s in {*marks, "drift onset"}]
    assert steps[0] == {"step": "drift onset", "at_s": 5.0} and all(s["at_s"] >= 5.0 for s in steps)


def test_detection_is_the_first_flagged_window_after_the_onset():
    onset = datetime(2026, 1, 1, 0, 0, 20, tzinfo=timezone.utc).timestamp()
    windows = [{"seq": 1, "end": str(onset - 10), "drift": {"drifted": True}},  # a false alarm before
               {"seq": 2, "end": str(onset + 10), "drift": {"drifted": False}, "findings": []},
               {"seq": 3, "end": str(onset + 30), "drift": None, "findings": [{"rule": "quality"}]},
               {"seq": 4, "end": "2026-01-01T00:01:10+00:00", "drift": {"drifted": True}}]
    assert first_detection(windows, onset)["seq"] == 3
    assert first_detection([windows[0], windows[3]], onset)["seq"] == 4  # ISO times too
    assert first_detection(windows[:2], onset) is None


def test_outcome_is_the_documented_json_object():
    started = 1000.0
    stats = {"requests": 120, "failed": 0, "records": 1200, "labels_sent": 1190, "labels_failed": 0,
             "latency_ms": {"p50": 4.0}, "errors": {},
             "quality": {"steady": {"1": {"records": 400, "accuracy": 0.81}},
                         "drifted": {"1": {"records": 600, "accuracy": 0.62}, "2": {"records": 50, "accuracy": 0.8}},
                         "recovered": {"2": {"records": 200, "accuracy": 0.79}}}}
    marks = {"champion serving": 1030.0, "traffic started": 1031.0, "drift onset": 1050.0, "promoted": 1150.5,
             "steady again": 1170.0}
    out = Outcome(started=started, marks=marks, champion_before=1, champion_after=2, stats=stats,
                  storage="/s/demo-x").to_dict()
    assert JSON_KEYS <= set(out) and json.loads(json.dumps(out)) == out
    assert (out["requests"], out["failed_requests"], out["champion_before"], out["champion_after"]) == (120, 0, 1, 2)
    assert (out["quality_pre_drift"], out["quality_before"], out["quality_after"]) == (0.81, 0.62, 0.79)
    assert out["time_to_recover_s"] == 100.5 and out["closed"] is True and out["recovered"] is True
    assert problems(out) == []
    assert out["timeline"][0] == {"step": "champion serving", "at_s": 30.0}
    assert out["audit_log"] == "/s/demo-x/audit"
    unfinished = Outcome(started=started, marks={"drift onset": 1050.0}, champion_before=1, stats=stats).to_dict()
    assert unfinished["closed"] is False and unfinished["time_to_recover_s"] is None
    assert unfinished["quality_after"] is None and unfinished["recovered"] is False
    assert len(problems(unfinished)) == 1 and problems(unfinished)[0].startswith("the loop did not close")
    no_gain = {**stats, "failed": 2,
               "quality": {**stats["quality"], "recovered": {"2": {"records": 9, "accuracy": 0.6}}}}
    same = Outcome(started=started, marks=marks, champion_before=1, champion_after=2, stats=no_gain).to_dict()
    assert problems(same)[0] == "2 requests failed" and problems(same)[1].endswith("live accuracy 0.6 vs 0.62")


def test_cli_demo_with_a_missing_config_is_a_one_line_error(tmp_path):
    done = subprocess.run([str(BIN / "raysys"), "demo", "--config", str(tmp_path / "nope.yaml"), "--json"],
                          cwd=tmp_path, env=clean_env(tmp_path / "home"), capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 1
    assert json.loads(done.stdout) == {"error": f"{tmp_path / 'nope.yaml'}: config file not found"}
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.yaml'}: config file not found"]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RAYSYS_TEST_DEMO") != "1", reason="the full demo: set RAYSYS_TEST_DEMO=1")
def test_full_demo_closes_the_loop_without_a_failed_request(tmp_path):
    env = clean_env(tmp_path / "home", RAYSYS_STORAGE_ROOT=str(tmp_path / "store"))
    done = subprocess.run([str(BIN / "raysys"), "demo", "--json", "--config", str(QUICKSTART)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert JSON_KEYS <= set(out), done.stderr[-3000:]
    steps = [s["step"] for s in out["timeline"]]
    assert steps == [s for s in STEPS if s != "rolled back"], (steps, done.stderr[-3000:])
    assert out["failed_requests"] == 0 and out["requests"] > 0, out["errors"]
    assert out["champion_after"] != out["champion_before"]
    assert out["quality_after"] > out["quality_before"], out
    assert 0 < out["time_to_recover_s"] and done.returncode == 0
    assert Path(out["audit_log"]).is_dir()
