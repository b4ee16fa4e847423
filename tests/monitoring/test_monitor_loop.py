"""The monitor's step without an actor: log files in, windows, drift incidents, retrain decisions out.

Each test copies the served model's data, features and registry to a root of its own (its own log,
its own app), writes prediction-log and feedback files as serving does, and steps the loop. A
"restart" is a new :class:`MonitorLoop` on the same storage: it must go on from the committed state
— no window counted twice, no alert repeated, no second retrain for the same incident.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest
import yaml

from raysys.audit import read_audit
from raysys.errors import ConfigError
from raysys.monitoring.loop import MonitorLoop
from raysys.monitoring.state import StateStore
from raysys.storage import Storage
from tests.modeling.test_train import system_from
from tests.monitoring.conftest import answered, labels_for, write_log_part
from tests.serving.test_prediction_log import FlakyFileSystem

MONITOR = {"interval_s": 0.5, "window": {"rows": 100, "min_rows": 50}, "reference_rows": 300,
           "drift": {"backend": "scipy", "multivariate": "none"}, "wandb": False,
           "retrain": {"triggers": ["drift"], "cooldown_s": 0}, "release": {"min_labelled": 10, "settle_labelled": 10}}


@pytest.fixture(scope="module")
def trained(served):
    """The served model's config and root: a breast-cancer champion (v1) and a perturbed copy (v2)."""
    rs, _ = served
    cfg = yaml.safe_load(rs.config_path.read_text())
    return cfg, Path(cfg["storage"]["root"])


@pytest.fixture()
def copied(trained, tmp_path):
    """A System on a copy of that root (data, features, registry; no log), v1 planned (no app runs)."""
    cfg, source = trained
    root = tmp_path / "root"
    shutil.copytree(source, root, ignore=lambda folder, names: [
        n for n in names if Path(folder) == source and n not in ("datasets", "splits", "features", "models")])
    copy = system_from({**cfg, "monitor": MONITOR, "serve": {"app_name": f"loop-{tmp_path.name[-10:]}"}}, root)
    copy.serving.deploy("1", actor="test", reason="plan only: the loop reads the plan")
    train = copy.data.read("latest", split="train").to_pandas()
    return copy, train


def drifted(frame: pd.DataFrame) -> pd.DataFrame:
    """Covariate drift: every numeric input scaled up by half."""
    numeric = frame.select_dtypes("number").columns.drop("target", errors="ignore")
    return frame.assign(**{c: frame[c] * 1.5 for c in numeric})


def windows_of(rs) -> list[dict]:
    return StateStore(rs.storage, rs.serving.app_name).windows()


def monitor_events(rs, action: str) -> list[dict]:
    return read_audit(rs.storage, action)


def test_windows_are_counted_once_and_a_restart_goes_on_without_repeating_alerts_or_retrains(copied):
    rs, train = copied
    launched: list[dict] = []
    loop = MonitorLoop(rs, launch=launched.append)
    sample = train.sample(250, random_state=1)
    steady = answered(rs, sample, 1)
    write_log_part(rs, "predictions", steady)
    write_log_part(rs, "feedback", labels_for(steady, sample["target"]))
    assert loop.step()["windows"] == [0, 1]  # 250 records: two windows of 100, 50 left open
    assert not monitor_events(rs, "monitor.alert.open")

    write_log_part(rs, "predictions", answered(rs, drifted(train.sample(150, random_state=2)), 1))
    assert loop.step()["windows"] == [2, 3]
    last = windows_of(rs)[-1]
    assert last["seq"] == 3 and last["drift"]["drifted"]
    opened = monitor_events(rs, "monitor.alert.open")
    assert [e["rule"] for e in opened] == ["drift"]
    assert len(launched) == 1 and launched[0]["trigger"] == "drift" and launched[0]["incident"] == opened[0]["incident"]

    again = MonitorLoop(rs, launch=launched.append)  # a restarted monitor, same storage
    assert again.step()["windows"] == []  # nothing new: nothing counted again
    write_log_part(rs, "predictions", answered(rs, drifted(train.sample(100, random_state=3)), 1))
    assert again.step()["windows"] == [4]
    assert len(monitor_events(rs, "monitor.alert.open")) == 1  # the incident is updated, not reopened
    assert len(launched) == 1  # the same trigger: no second retrain
    windows = windows_of(rs)
    assert [w["seq"] for w in windows] == [0, 1, 2, 3, 4]
    assert sum(w["rows"] for w in windows) == 500 and again.state.windower["rows"] == 0
    # the retrain the old monitor ran died with it: recorded as interrupted, not run again
    assert again.state.retrain["running"] is None and again.state.retrain["last"]["status"] == "interrupted"
    assert [e["status"] for e in monitor_events(rs, "monitor.retrain.done")] == ["interrupted"]
    assert windows[-1]["labels"]["matched"] == 250
    assert rs.monitor.alerts(open_only=True)[0]["rule"] == "drift"


def test_a_step_whose_storage_fails_changes_nothing_and_the_next_one_counts_each_window_once(copied):
    rs, train = copied
    loop = MonitorLoop(rs)
    write_log_part(rs, "predictions", answered(rs, train.sample(120, random_state=4), 1))
    assert loop.step()["windows"] == [0]
    committed = StateStore(rs.storage, rs.serving.app_name).load().to_dict()

    write_log_part(rs, "predictions", answered(rs, train.sample(180, random_state=5), 1))
    flaky = FlakyFileSystem(fail_writes=1)
    storage = Storage(uri=f"flaky://{rs.storage.base}", fs=pafs.PyFileSystem(flaky), base=rs.storage.base)
    rs.__dict__["storage"] = storage  # the system's storage root fails its next write
    loop.store = StateStore(storage, rs.serving.app_name)
    with pytest.raises(OSError, match="storage unavailable"):
        loop.step()
    assert StateStore(rs.storage, rs.serving.app_name).load().to_dict() == committed  # nothing committed
    assert loop.state.last_error and "storage unavailable" in loop.state.last_error

    assert loop.step()["windows"] == [1, 2]  # retried: the same files, each window once
    windows = windows_of(rs)
    assert [w["seq"] for w in windows] == [0, 1, 2] and sum(w["rows"] for w in windows) == 300
    assert loop.state.last_error is None


@pytest.mark.parametrize(("window", "field"), [({"rows": 10, "min_rows": 50}, "monitor.window"),
                                               ({"rows": None, "seconds": None}, "monitor.window")])
def test_impossible_windows_are_a_config_error_naming_the_field(window, field):
    from raysys.config import parse_config

    with pytest.raises(ConfigError, match=field):
        parse_config({"data": {"name": "d", "source": {"kind": "sklearn", "dataset": "wine"}},
                      "monitor": {"window": window}})


def test_a_restarted_monitor_resumes_the_canary_it_was_in_and_decides_it_once(copied):
    rs, train = copied
    launched: list[dict] = []
    loop = MonitorLoop(rs, launch=launched.append)
    assert loop.request_retrain("test")["allowed"]
    assert not loop.request_retrain("twice")["allowed"]  # one retrain at a time
    # the retrain's result as the worker hands it back (E's retrain is tested on its own)
    loop.retrain_finished(launched[0], {"status": "challenger", "challenger": True, "model_version": 2,
                                        "trigger": "manual", "decision": "challenger: test"})
    loop.step()
    assert rs.serving.plan().challenger == 2
    assert len(monitor_events(rs, "monitor.release.canary")) == 1

    restarted = MonitorLoop(rs)  # the actor died with the canary running
    sample = train.sample(60, random_state=6)
    for version in (1, 2):
        log = answered(rs, sample, version)
        write_log_part(rs, "predictions", log)
        write_log_part(rs, "feedback", labels_for(log, sample["target"]))
    restarted.step()
    decided = monitor_events(rs, "monitor.release.promote") + monitor_events(rs, "monitor.release.rollback")
    assert len(decided) == 1 and decided[0]["model_version"] == 2
    plan = rs.serving.plan()
    assert plan.challenger is None and plan.champion == (2 if decided[0]["action"].endswith("promote") else 1)
    MonitorLoop(rs).step()
    assert len(monitor_events(rs, "monitor.release.")) == 2  # canary, then one decision: nothing repeated
    manual = [e for e in monitor_events(rs, "monitor.retrain.done") if e.get("trigger") == "manual"]
    assert len(manual) == 1 and manual[0]["status"] == "challenger"


def test_no_traffic_opens_an_incident_although_no_window_closes(copied):
    from raysys import System
    from raysys.monitoring.incidents import read_incidents

    rs, _ = copied
    monitor = rs.config.monitor
    rules = monitor.alerts.rules.model_copy(update={"no_traffic_s": 60.0})
    quiet = System(rs.config.model_copy(update={"monitor": monitor.model_copy(
        update={"alerts": monitor.alerts.model_copy(update={"rules": rules})})}))
    loop = MonitorLoop(quiet)
    now = time.time()
    loop.step(now=now)
    assert not read_incidents(rs.storage, rs.serving.app_name)  # a minute has not passed
    loop.step(now=now + 120)
    loop.step(now=now + 180)  # still quiet: the same incident, opened once
    (incident,) = read_incidents(rs.storage, rs.serving.app_name, open_only=True)
    assert incident["rule"] == "no_traffic" and "no request for" in incident["message"]
