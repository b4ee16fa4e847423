"""Autoscaling under load, the serving CLI and batch inference, on the served model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from raysys.cli.main import app
from tests.serving.test_rollouts import Load
from tests.serving.test_server import raw_rows

runner = CliRunner()


def replicas(rs) -> int:
    deployment = rs.serving.status()["deployments"]["model_server"]
    return deployment["replicas"].get("RUNNING", 0)


def wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def test_replicas_scale_up_under_load_and_back_down(served):
    rs, url = served
    assert wait_for(lambda: replicas(rs) == 1, 60)
    with Load(url, raw_rows(rs, 20), clients=8, pause_s=0.0):
        assert wait_for(lambda: replicas(rs) >= 2, 60), rs.serving.status()
    assert wait_for(lambda: replicas(rs) == 1, 90), rs.serving.status()


def cli(rs, *args: str) -> dict:
    config = rs.config_path
    result = runner.invoke(app, [*args, "-c", str(config), "--json"])
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, result.stderr
    return {"exit": result.exit_code, **json.loads(lines[-1])}


def test_cli_status_deploy_and_rollback(served):
    rs, _ = served
    status = cli(rs, "serve", "status")
    assert status["exit"] == 0 and status["status"] == "RUNNING" and status["plan"]["champion"] == 1
    moved = cli(rs, "deploy", "--model", "2", "--canary", "20", "--reason", "cli canary")
    assert moved["exit"] == 0 and moved["plan"]["challenger"] == 2 and moved["applied_to_running_app"]
    assert "v2 (challenger)" in cli(rs, "serve", "status")["traffic"]
    back = cli(rs, "rollback")
    assert back["exit"] == 0 and back["plan"]["challenger"] is None
    both = cli(rs, "deploy", "--model", "2", "--canary", "5", "--shadow")
    assert both["exit"] == 1 and "choose one" in both["error"]
    unknown = cli(rs, "deploy", "--model", "77")
    assert unknown["exit"] == 1 and "77" in unknown["error"] and rs.serving.plan().challenger is None


def test_batch_predictions_match_online_and_keep_the_id(served, tmp_path):
    rs, url = served
    rows = raw_rows(rs, 40)
    frame = pd.DataFrame(rows).assign(id=[f"row-{i}" for i in range(len(rows))])
    frame.to_csv(tmp_path / "in.csv", index=False)
    result = cli(rs, "predict", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out"),
                 "--model", "champion")
    assert result["exit"] == 0 and result["rows"] == 40 and result["model_version"] == 1
    out = pd.read_parquet(tmp_path / "out").sort_values("id")
    assert list(out.columns) == ["id", "prediction", "probability_0", "probability_1", "model_version"]
    online = pd.Series(requests_predict(url, rows), index=[f"row-{i}" for i in range(len(rows))])
    assert out.set_index("id")["probability_1"].round(6).equals(online.loc[out["id"]].round(6))
    bad = cli(rs, "predict", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "o2"), "--id", "nope")
    assert bad["exit"] == 1 and "nope" in bad["error"]
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "wrong.csv", index=False)
    wrong = cli(rs, "predict", "--input", str(tmp_path / "wrong.csv"), "--output", str(tmp_path / "o3"))
    assert wrong["exit"] == 1 and "missing model input column" in wrong["error"]
    missing = cli(rs, "predict", "--input", str(tmp_path / "none.csv"), "--output", str(tmp_path / "o4"))
    assert missing["exit"] == 1 and "no such file" in missing["error"]


def requests_predict(url: str, rows: list[dict]) -> list[float]:
    import requests

    body = requests.post(f"{url}/v1/predict", json={"records": rows}, timeout=30).json()
    return [p[1] for p in body["probabilities"]]


def test_cli_serve_up_and_down_a_second_app(served, tmp_path):
    import requests
    import yaml

    rs, _ = served
    cfg = yaml.safe_load(rs.config_path.read_text())
    cfg["serve"] = {**cfg["serve"], "app_name": "second", "route_prefix": "/second", "model": "1"}
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump(cfg))
    up = runner.invoke(app, ["serve", "up", "-c", str(second), "--json"])
    assert up.exit_code == 0, up.stderr
    status = json.loads(up.stdout.strip().splitlines()[-1])
    assert status["status"] == "RUNNING" and status["url"].endswith("/second")
    assert requests.get(f"{status['url']}/healthz", timeout=30).json()["versions"] == [1]
    down = runner.invoke(app, ["serve", "down", "-c", str(second), "--json"])
    assert down.exit_code == 0 and json.loads(down.stdout.strip().splitlines()[-1])["stopped_local_ray"] is False
    gone = runner.invoke(app, ["serve", "status", "-c", str(second), "--json"])
    assert json.loads(gone.stdout.strip().splitlines()[-1])["status"] == "NOT_RUNNING"
    assert requests.get(f"{rs.serving.url}/healthz", timeout=30).status_code == 200  # the first app is untouched
    cfg["serve"] = {**cfg["serve"], "app_name": "third", "model": "nope"}
    second.write_text(yaml.safe_dump(cfg))
    bad = runner.invoke(app, ["serve", "up", "-c", str(second)])
    assert bad.exit_code == 1 and "nope" in bad.stderr


def test_cli_serve_up_starts_its_own_local_ray_when_there_is_none_and_down_stops_it(served, ray_session, tmp_path):
    """A fresh laptop: no Ray running for this app, so `serve up` starts a head; `down` stops that one only."""
    import requests
    import yaml

    from raysys.runtime import free_port

    rs, _ = served
    cfg = yaml.safe_load(rs.config_path.read_text())
    port = free_port()
    cfg["ray"] = {"num_cpus": 1}
    cfg["serve"] = {**cfg["serve"], "app_name": "own-ray", "port": port, "model": "1",
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
    config = tmp_path / "own.yaml"
    config.write_text(yaml.safe_dump(cfg))
    script = str(Path(sys.executable).with_name("raysys"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # nothing to join

    def cli(*args: str) -> dict:
        done = subprocess.run([script, *args, "-c", str(config), "--json"], env=env, capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    record = Path(cfg["storage"]["root"]) / "serving" / "own-ray" / "cluster.json"
    try:
        up = cli("serve", "up")
        head = json.loads(record.read_text())
        assert up["status"] == "RUNNING" and head["address"] != ray_session.get_runtime_context().gcs_address
        os.kill(head["pid"], 0)  # the head raysys started is alive
        rows = raw_rows(rs, 2)
        answer = requests.post(f"http://127.0.0.1:{port}/v1/predict", json={"records": rows}, timeout=30)
        assert answer.status_code == 200 and answer.json()["model_version"] == 1
        assert cli("serve", "status")["status"] == "RUNNING"  # a later command finds the recorded head
        assert cli("serve", "down")["stopped_local_ray"] is True
        assert _exits(head["pid"], timeout_s=60)
        current = Path("/tmp/ray/ray_current_cluster")  # `ray start` named the head "the" local Ray there
        assert not current.exists() or current.read_text().rsplit(":", 1)[-1].strip() != head["address"].rsplit(":", 1)[-1]
        assert requests.get(f"{rs.serving.url}/healthz", timeout=30).status_code == 200  # the session's app is untouched
    finally:
        pid = json.loads(record.read_text()).get("pid") if record.exists() else None
        if pid and not _exits(pid, timeout_s=0):
            os.killpg(pid, signal.SIGTERM)  # only the head this test started


def _exits(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
