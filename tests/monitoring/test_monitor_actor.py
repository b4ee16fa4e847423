"""The monitor actor on the test session's Ray, watching the really served model.

One test walks the actor's life: started through ``System.monitor`` (named, detached), it counts
windows of real traffic, joins feedback, exports Prometheus metrics through Ray's metrics agent
(scraped from the node's metrics port) and killed with
SIGKILL mid-window, Ray restarts it and it goes on from its committed state: every logged answer is
in exactly one window. ``monitor stop`` ends it. The CLI's bad-input paths run as subprocesses in a
clean environment.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from raysys.audit import read_audit
from raysys.errors import RaysysError
from raysys.modeling.tracking import model_tag
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


def monitor_pids(rs) -> set[int]:
    """The pids of the processes that opened the monitor runs on record."""
    return {json.loads(p.read_text())["owner"]["pid"] for p in Path(rs.storage.path("runs")).glob("monitor-*/run.json")}


def accounted(rs) -> int:
    """Records in closed windows plus the open window's, from the committed state and window files."""
    store = StateStore(rs.storage, rs.serving.app_name)
    return sum(w["rows"] for w in store.windows()) + (store.load().windower or {}).get("rows", 0)


def scrape(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""


def monitoring(rs, monitor: dict):
    """A System on the served root with its own monitor config."""
    from raysys import System
    from raysys.config import parse_config

    cfg = yaml.safe_load(rs.config_path.read_text())
    return System(parse_config({**cfg, "monitor": monitor}))


@pytest.fixture()
def monitored(served):
    """A System on the served root with a small, fast monitor config (the fixture's own monitor stopped)."""
    rs, url = served
    rs.monitor.stop()  # `serve up` started one with the default config
    mon = monitoring(rs, MONITOR)
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

    wait_for(lambda: first_pid in monitor_pids(rs), "the first actor's W&B run on record")
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

    # the killed actor's run (if it had opened one) is marked interrupted by its successor; the rest finished
    runs = [json.loads(p.read_text()) for p in Path(rs.storage.path("runs")).glob("monitor-*/run.json")]
    tag = model_tag(rs.models.name, 1)
    assert runs and all(tag in r["tags"] for r in runs), runs
    assert not [r for r in runs if r["status"] == "running"], runs
    ours = Counter((r["owner"]["pid"], r["status"]) for r in runs if r["owner"]["pid"] in (first_pid, second_pid))
    assert set(ours) == {(first_pid, "interrupted"), (second_pid, "finished")}, runs
    (finished, *_) = [r for r in runs if r["owner"]["pid"] == second_pid]
    (log,) = Path(rs.storage.path("runs"), finished["run_id"]).glob("wandb/offline-run-*/run-*.wandb")
    records = finished_records(log)
    assert of_type(records, "run")[0].run_group == "production" and of_type(records, "history")


def test_a_release_survives_the_actor_sigkilled_mid_canary_and_is_decided_and_moved_once(served, ray_session):
    """`monitor release v2`; the actor is killed while the canary waits for labels; the restarted
    one judges it on the labelled canary traffic and makes the decision's move once."""
    rs, url = served
    ray = ray_session
    mon = monitoring(rs, {**MONITOR, "release": {"min_labelled": 10, "settle_labelled": 10}})
    champion = rs.serving.plan().champion
    test = rs.data.read("latest", split="test").to_pandas()
    inputs, label = rs.models.load("champion").state.input_columns, rs.config.data.label
    started = len(read_audit(rs.storage, "monitor.release."))
    try:
        mon.monitor.start()
        with pytest.raises(RaysysError, match=f"v{champion} is the champion already"):
            mon.monitor.release(str(champion))
        released = mon.monitor.release("2", reason="a challenger trained offline")["release"]
        assert released["phase"] == "canary" and released["applied"]
        assert rs.serving.plan().challenger == 2
        with pytest.raises(RaysysError, match="already being judged"):
            mon.monitor.release("2")

        handle = ray.get_actor(f"raysys-monitor-{rs.serving.app_name}", namespace="raysys")
        first_pid = ray.get(handle.pid.remote())
        os.kill(first_pid, signal.SIGKILL)  # mid-release: the canary is out, not yet judged
        wait_for(lambda: _pid(ray, handle, first_pid), "the actor restarted by Ray")

        decisions = {"monitor.release.promote": "promoted", "monitor.release.rollback": "rolled_back"}

        def labelled_traffic() -> list[dict] | None:
            sent = send(url, test, label, inputs, per_request=2)
            mon.monitor.feedback([{"request_id": r, "row": i, "label": y} for r, ys in sent for i, y in enumerate(ys)])
            events = read_audit(rs.storage, "monitor.release.")[started:]
            return events if events[-1]["action"] in decisions else None

        events = wait_for(labelled_traffic, "the canary judged", timeout_s=240, every_s=1)
        phase = decisions[events[-1]["action"]]
        assert mon.monitor.status()["release"]["phase"] == phase
        assert [e["action"] for e in events] == ["monitor.release.requested", "monitor.release.canary",
                                                 {"promoted": "monitor.release.promote",
                                                  "rolled_back": "monitor.release.rollback"}[phase]]
        decided = events[-1]
        assert decided["moved"] and decided["model_version"] == 2 and decided["evidence"]["challenger"]["labelled"] >= 10
        plan = rs.serving.plan()
        assert plan.challenger is None and plan.champion == (2 if phase == "promoted" else champion)
    finally:
        mon.monitor.stop()
        plan = rs.serving.plan()
        if plan.champion != champion or plan.challenger is not None:
            rs.serving.rollback(to=str(champion), actor="test", reason="restore the served champion")


def test_a_replica_sigkilled_under_load_loses_no_answered_row_and_the_monitor_counts_each_once(monitored,
                                                                                             ray_session):
    """Clients retry what failed (as new requests); every answer they got is logged once and in one window."""
    from ray.util.state import list_actors

    rs, url = monitored
    rows = rs.data.read("latest", split="test").to_pandas()[rs.models.load("champion").state.input_columns]
    records = rows.iloc[:3].to_dict("records")
    answered, failed, stop = [], [], threading.Event()

    def client(index: int) -> None:
        with httpx.Client(timeout=30) as session:
            for n in itertools.count():
                if stop.is_set():
                    return
                try:
                    answer = session.post(f"{url}/v1/predict", json={"records": records},
                                          headers={"x-request-id": f"kill-{index}-{n}"})
                except httpx.HTTPError as error:
                    failed.append(type(error).__name__)
                    continue
                (answered if answer.status_code == 200 else failed).append(
                    answer.json()["request_id"] if answer.status_code == 200 else answer.status_code)

    rs.monitor.start()
    clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(3)]
    for thread in clients:
        thread.start()
    try:
        wait_for(lambda: len(answered) >= 30, "traffic answered")
        session = ray_session.get_runtime_context().gcs_address  # other Rays may run on this machine
        replicas = [a for a in list_actors(address=session, filters=[("state", "=", "ALIVE")])
                    if a.class_name.startswith(f"ServeReplica:{rs.serving.app_name}:")]
        os.kill(replicas[0].pid, signal.SIGKILL)  # its buffer held answered rows: flush_s is 0.5 s
        killed_at = len(answered)
        wait_for(lambda: len(answered) >= killed_at + 60, "traffic answered after the kill")
    finally:
        stop.set()
        for thread in clients:
            thread.join()

    def logged_once() -> Counter | None:
        log = rs.serving.prediction_log()
        ids = Counter(log.loc[log["_role"] == "answer", "_request_id"]) if len(log) else Counter()
        return ids if all(ids[r] == len(records) for r in answered) else None

    ids = wait_for(logged_once, "every answered request in the log (the killed replica's by its successor)")
    ours = {request_id: n for request_id, n in ids.items() if request_id.startswith("kill-")}
    assert all(n == len(records) for n in ours.values())  # none twice
    assert len(set(ours) - set(answered)) <= len(clients)  # answered as the replica died, the answer lost
    logged = answer_rows(rs)
    wait_for(lambda: accounted(rs) >= logged, "the monitor read every logged answer", timeout_s=60)
    windows = StateStore(rs.storage, rs.serving.app_name).windows()
    assert [w["seq"] for w in windows] == list(range(len(windows)))
    assert accounted(rs) == answer_rows(rs)  # each logged answer in exactly one window


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
