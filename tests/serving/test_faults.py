"""Serving faults on a real Ray Serve: visible in ``serve status``, and a graceful stop loses no log row.

A failing canary or shadow never fails a request, so the only way to see it is the count each
replica reports; the closed loop's automatic rollback will read these numbers.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import requests
from typer.testing import CliRunner

from raysys.cli.main import app
from tests.serving.conftest import copy_on_new_root, failing_copy
from tests.serving.test_autoscaling_and_cli import cli
from tests.serving.test_server import raw_rows

REQUESTS = 24


def count(faults: dict, version: int, role: str, event: str) -> int:
    """One summed count from ``status()["faults"]`` (0 when never counted)."""
    return faults["versions"].get(str(version), {}).get(role, {}).get(event, 0)


def settled(read, done, timeout_s: float = 60.0):
    """``read()`` again until ``done(value)`` (replicas report every ``serve.fault_report_s``)."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.5)
        value = read()
    return value


def post_many(url: str, rows: list[dict]) -> Counter:
    """Send REQUESTS predictions; the (status, answering version) of each."""
    answers = [requests.post(f"{url}/v1/predict", json={"records": rows}, timeout=30) for _ in range(REQUESTS)]
    return Counter((a.status_code, a.json().get("model_version")) for a in answers)


def test_a_failing_canary_and_shadow_fail_no_request_and_are_counted_in_serve_status(served):
    rs, url = served
    broken = failing_copy(rs, 1)
    rows = raw_rows(rs, 2)

    def faults() -> dict:
        return rs.serving.status()["faults"]

    rs.serving.deploy(str(broken), "canary", percent=50, reason="a bad canary")
    try:
        assert post_many(url, rows) == Counter({(200, 1): REQUESTS})  # the champion answered every one
    finally:
        rs.serving.rollback(reason="end the bad canary")
    seen = settled(faults, lambda f: count(f, broken, "challenger", "requests") > 0)
    tried = count(seen, broken, "challenger", "requests")
    assert 0 < tried == count(seen, broken, "challenger", "failures") <= REQUESTS  # each fell back
    assert seen["versions"][str(broken)]["challenger"]["last_error"]

    rs.serving.deploy(str(broken), "shadow", reason="a bad shadow")
    try:
        assert post_many(url, rows) == Counter({(200, 1): REQUESTS})
    finally:
        rs.serving.rollback(reason="end the bad shadow")

    def every_copy_counted(f: dict) -> bool:
        return count(f, broken, "shadow", "requests") + count(f, broken, "shadow", "dropped") == REQUESTS

    seen = settled(faults, every_copy_counted)
    assert every_copy_counted(seen), seen
    assert count(seen, broken, "shadow", "failures") == count(seen, broken, "shadow", "requests") > 0

    status = cli(rs, "serve", "status")  # --json
    assert status["exit"] == 0 and count(status["faults"], broken, "shadow", "failures") > 0
    assert status["faults"]["prediction_log"]["written_rows"] > 0 and status["faults"]["replicas"] >= 1
    text = CliRunner().invoke(app, ["serve", "status", "-c", str(rs.config_path)], env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.stderr
    assert "requests and faults" in text.stdout and "prediction log:" in text.stdout
    cells = [[cell.strip() for cell in line.split("│")] for line in text.stdout.splitlines()]
    shown = {tuple(row[row.index(f"v{broken}"):][:4]) for row in cells if f"v{broken}" in row}
    copies = str(count(status["faults"], broken, "shadow", "requests"))
    assert (f"v{broken}", "shadow", copies, copies) in shown  # version, role, requests, failures
    assert {row[1] for row in shown} == {"challenger", "shadow"}


def test_a_graceful_stop_under_load_loses_no_answered_request(served, tmp_path):
    """Two replicas buffer every row (no flush before shutdown); the app is removed under load."""
    rs, _ = served
    other = copy_on_new_root(rs, tmp_path / "store", 1, app_name="drain", route_prefix="/drain",
                             autoscaling={"min_replicas": 2, "max_replicas": 2},
                             prediction_log={"flush_rows": 100_000, "flush_s": 3600.0})
    other.serving.up()
    url, rows = other.serving.url, raw_rows(rs, 2)
    answered: list[str] = []
    stop = threading.Event()

    def client(index: int) -> None:
        session, n = requests.Session(), 0
        while not stop.is_set():
            n += 1
            try:
                answer = session.post(f"{url}/v1/predict", json={"records": rows},
                                      headers={"x-request-id": f"c{index}-{n}"}, timeout=30)
            except requests.RequestException:
                continue  # the app is going away
            if answer.status_code == 200:
                answered.append(answer.json()["request_id"])

    clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(3)]
    for thread in clients:
        thread.start()
    try:
        settled(lambda: len(answered), lambda n: n >= 30)
        assert other.serving.prediction_log().empty  # every answered row is still in a replica's buffer
        other.serving.down()  # Serve drains and stops both replicas while the clients go on
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    logged = other.serving.prediction_log()
    answers = logged[logged["_role"] == "answer"]
    assert len(answered) >= 30
    assert Counter(answers["_request_id"]) == Counter({request_id: len(rows) for request_id in answered})
    faults = other.serving.status()["faults"]  # the app is gone; its replicas' reports stay
    assert faults["replicas"] == 2 and count(faults, 1, "champion", "requests") >= len(answered)
    assert faults["prediction_log"]["written_rows"] == len(logged)
