"""The monitor actor on the test session's Ray, watching the really served model.

One test walks the actor's life: started through ``System.monitor`` (named, detached), it counts
windows of real traffic, joins feedback, exports Prometheus metrics through Ray's metrics agent
(scraped from the node's metrics port) and killed with
SIGKILL mid-window, Ray restarts it and it goes on from its committed state: every logged answer is
in exactly one window. ``monitor stop`` ends it. The CLI's bad-input paths run as subprocesses in a
clean environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from raysys.monitoring.state import StateStore
from tests.user_shell import BIN, clean_env

MONITOR = {"interval_s": 0.5, "window": {"rows": 40, "min_rows": 20}, "reference_rows": 200,
           "drift": {"backend": "scipy", "multivariate": "none"}, "wandb": True,
           "retrain": {"triggers": []}}


def wait_for(condition, what: str, timeout_s: float = 90.0, every_s: float = 0.5):
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    pytest.fail(f"{what}: not within {timeout_s:.0f} s")


def send(url: str, rows, label: str, inputs: list[str], per_request: int = 4) -> list[tuple[str, list]]:
    """Predict ``rows`` a few records per request; the request ids and the true labels of their records."""
    sent = []
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(rows), per_request):
            chunk = rows.iloc[start:start + per_request]
            answer = client.post(f"{url}/v1/predict", json={"records": chunk[inputs].to_dict("records")})
            assert answer.status_code == 200, answer.text
            sent.append((answer.json()["request_id"], chunk[label].tolist()))
    return sent


def answer_rows(rs) -> int:
    log = rs.serving.prediction_log()
    return int((log["_role"] == "answer").sum()) if len(log) else 0


def accounted(rs) -> int:
    """Records in closed windows plus the open window's, from the committed state and window files."""
    store = StateStore(rs.storage, rs.serving.app_name)
    return sum(w["rows"] for w in store.windows()) + (store.load().windower or {}).get("rows", 0)


def scrape(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""


@pytest.fixture()
def monitored(served):
    """A System on the served root with a small, fast monitor config (the fixture's own monitor stopped)."""
    from raysys import System
    from raysys.config import parse_config

    rs, url = served
    rs.monitor.stop()  # `serve up` started one with the default config
    cfg = yaml.safe_load(rs.config_path.read_text())
    cfg["monitor"] = MONITOR
    mon = System(parse_config(cfg))
    yield mon, url
    mon.monitor.stop()


def test_the_actor_counts_windows_exports_metrics_survives_sigkill_and_stops(monitored, ray_session):
    rs, url = monitored
    ray = ray_session
    test = rs.data.read("latest", split="test").to_pandas()
    inputs, label = rs.models.load("champion").state.input_columns, rs.config.data.label

    started = rs.monitor.start()
    assert started["running"] and started["started"]
    assert rs.monitor.start()["started"] is False  # one monitor per app
    handle = ray.get_actor(f"raysys-monitor-{rs.serving.app_name}", namespace="raysys")
    first_pid = ray.get(handle.pid.remote())

    sent = send(url, test.iloc[:80], label, inputs)
    rs.monitor.feedback([{"request_id": rid, "row": i, "label": y} for rid, ys in sent for i, y in enumerate(ys)])
    sent = send(url, test.iloc[80:], label, inputs)  # windows closing after the labels carry live quality
    status = wait_for(lambda: (s := rs.monitor.status())["windows"] >= 2 and s, "two windows closed")
    assert status["running"] and status["last_window"]["versions"]["1"]["requests"] > 0

    os.kill(first_pid, signal.SIGKILL)  # mid-window: the open window holds records
    second_pid = wait_for(lambda: _pid(ray, handle, first_pid), "the actor restarted by Ray")
    assert second_pid != first_pid
    send(url, test.iloc[:60], label, inputs)
    logged = wait_for(lambda: (n := answer_rows(rs)) >= len(test) + 60 and n, "every answer logged")
    wait_for(lambda: accounted(rs) == logged, "the restarted monitor read every answer", timeout_s=60)
    windows = StateStore(rs.storage, rs.serving.app_name).windows()
    assert [w["seq"] for w in windows] == list(range(len(windows)))  # none twice, none skipped
    assert rs.monitor.status()["feedback"]["matched"] == 80

    port = ray.nodes()[0]["MetricsExportPort"]
    names = ("raysys_monitor_requests", "raysys_monitor_drift_p_value", "raysys_monitor_live_quality")
    text = wait_for(lambda: (t := scrape(port)) and all(n in t for n in names) and t, "the monitor's metrics")
    requests = [line for line in text.splitlines() if "raysys_monitor_requests" in line and 'version="1"' in line]
    assert requests and float(requests[0].rsplit(" ", 1)[1]) > 0
    assert 'feature="mean radius"' in text or "feature=" in text

    stopped = rs.monitor.stop()
    assert stopped["stopped"] and not rs.monitor.status()["running"]
    actions = [e["action"] for e in rs.monitor.audit(action="monitor.")]
    assert "monitor.start" in actions and actions[-1] == "monitor.stop"

    # each window went to W&B (offline): a run in group "production", tagged with the serving version
    from tests.modeling.test_tracking import finished_records, of_type

    runs = [json.loads(p.read_text()) for p in Path(rs.storage.path("runs")).glob("monitor-*/run.json")]
    assert runs and all("model:v1" in r["tags"] and r["status"] == "finished" for r in runs), runs
    (log,) = Path(rs.storage.path("runs"), runs[0]["run_id"]).glob("wandb/offline-run-*/run-*.wandb")
    records = finished_records(log)
    assert of_type(records, "run")[0].run_group == "production" and of_type(records, "history")


def _pid(ray, handle, old: int) -> int | None:
    try:
        pid = ray.get(handle.pid.remote(), timeout=5)
    except Exception:  # noqa: BLE001 - dead or restarting: ask again
        return None
    return pid if pid != old else None


def run_cli(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "raysys"), *args], check=False, capture_output=True, text=True,
                          env=clean_env(home), cwd=cwd, timeout=120)


def test_monitor_commands_without_a_served_model_say_so_plainly(tmp_path):
    config = tmp_path / "raysys.yaml"
    config.write_text(yaml.safe_dump({"storage": {"root": str(tmp_path / "store")},
                                      "data": {"name": "wine", "source": {"kind": "sklearn", "dataset": "wine"},
                                               "label": "target", "task": "multiclass"}}))
    home = tmp_path / "home"
    status = run_cli("monitor", "status", "--json", "-c", str(config), home=home, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    out = json.loads(status.stdout)
    assert out["running"] is False and out["windows"] == 0
    start = run_cli("monitor", "start", "-c", str(config), home=home, cwd=tmp_path)
    assert start.returncode == 1 and "error: monitor: nothing is served" in start.stderr
    assert "Traceback" not in start.stderr
    retrain = run_cli("retrain", "--reason", "test", "--json", "-c", str(config), home=home, cwd=tmp_path)
    assert retrain.returncode == 1 and "error" in json.loads(retrain.stdout)
