"""The web dashboard: its pure views and action parsing, its JSON routes and admin actions over
HTTP on the served app, and the page itself in a real headless browser (Debian's chromium driven
by Playwright; skipped, with the reason, where chromium is not installed)."""

from __future__ import annotations

import os
import shutil
import time
from importlib import resources
from pathlib import Path

import httpx
import pytest
import yaml

from raysys.app.dashboard import views
from raysys.app.dashboard.actions import parse_action
from raysys.audit import read_audit
from raysys.serving.payloads import RequestError
from tests.modeling.test_train import system_from
from tests.monitoring.conftest import answered, write_log_part

MONITOR = {"window": {"rows": 100, "min_rows": 50}, "reference_rows": 300, "wandb": False,
           "drift": {"backend": "scipy", "multivariate": "none"}, "retrain": {"triggers": []}}
CHROMIUM = os.environ.get("RAYSYS_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


# ---------------------------------------------------------------- pure: views and action bodies

def test_action_bodies_are_parsed_or_refused_naming_the_field():
    assert parse_action("promote", {"version": 2, "reason": "better"}).version == "2"
    assert parse_action("promote", {"version": "champion"}).version == "champion"
    assert parse_action("rollback", {}).version is None
    assert parse_action("rollback", {"to": 1}).version_field == "to"
    cases = [("promote", [], "body"), ("promote", {"versoin": 2}, "versoin"), ("promote", {"version": True}, "version"),
             ("promote", {"version": 0}, "version"), ("promote", {"version": " "}, "version"),
             ("rollback", {"to": {"v": 1}}, "to"), ("retrain", {"version": 1}, "version"),
             ("retrain", {"reason": 5}, "reason"), ("retrain", {"reason": "x" * 501}, "reason")]
    for name, body, field in cases:
        with pytest.raises(RequestError) as refused:
            parse_action(name, body)
        assert refused.value.status == 422 and refused.value.field == field, (name, body)
        assert str(refused.value).startswith(f"{field}:")


def test_views_join_lineage_deployments_traffic_live_numbers_and_drift():
    plan = {"champion": 2, "challenger": 3, "canary_percent": 10.0, "sticky": False, "shadow": None, "generation": 4}
    assert views.traffic_split(plan) == [{"version": 2, "role": "champion", "percent": 90.0},
                                         {"version": 3, "role": "challenger", "percent": 10.0, "sticky": False}]
    versions = [{"version": v, "created_at": f"t{v}", "aliases": [], "run_id": f"run{v}", "description": "",
                 "metrics": {"test": {"accuracy": 0.9, "n": 10, "confusion": [[1]]}},
                 "lineage": {"dataset_version": f"ds{v}", "run_id": f"run{v}"}} for v in (1, 2, 3)]
    events = [{"at": "a", "action": "serve.up", "actor": "me", "plan": {"champion": 1}},
              {"at": "b", "action": "deploy.blue-green", "actor": "me", "to": {"champion": 2}},
              {"at": "c", "action": "deploy.canary", "actor": "dashboard", "to": {"champion": 2, "challenger": 3}},
              {"at": "d", "action": "keys.create", "actor": "me"}]
    rows = views.version_rows(versions, plan, events)
    assert [r["version"] for r in rows] == [3, 2, 1]
    assert rows[0]["serving"] == "challenger" and rows[2]["serving"] is None
    assert rows[0]["lineage"]["dataset_version"] == "ds3" and rows[0]["lineage"]["run_id"] == "run3"
    assert rows[0]["metrics"] == {"accuracy": 0.9, "n": 10}
    assert [(d["action"], d["role"]) for d in rows[1]["deployments"]] == [("deploy.blue-green", "champion"),
                                                                         ("deploy.canary", "champion")]
    windows = [{"seq": s, "end": s * 10.0, "versions": {"2": {"records": 100 + s, "labelled": s, "quality": {},
                                                               "latency_ms": {"p99": 3.0}}},
                "drift": None if s == 0 else {"threshold": 0.01, "features": {
                    "age": {"p_value": 0.5 / s, "drifted": False}}}} for s in range(3)]
    assert views.live_by_version(windows)[0]["records"] == 102  # the newest window the version answered in
    drift = views.drift_series(windows)
    assert drift["threshold"] == 0.01 and [p["p_value"] for p in drift["features"]["age"]] == [0.5, 0.25]
    assert views.newest([{"n": 1}, {"n": 2}, {"n": 3}], 2) == [{"n": 3}, {"n": 2}]


def test_the_page_and_its_assets_ship_in_the_package():
    folder = resources.files("raysys.app.dashboard").joinpath("static")
    page = folder.joinpath("index.html").read_text()
    for asset in ("dashboard.js", "dashboard.css"):
        assert f"dashboard/static/{asset}" in page and folder.joinpath(asset).is_file()
    assert "http://" not in page and "https://" not in page  # no CDN: every asset is ours
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"raysys.app.dashboard" = ["static/*.html", "static/*.js", "static/*.css"]' in pyproject


# ---------------------------------------------------------------- HTTP on the served app

@pytest.fixture()
def restored(served):
    """Put the served app's plan back as it was (its champion, nothing else) after the test."""
    rs, _ = served
    original = rs.serving.plan()
    yield
    plan = rs.serving.plan()
    if plan.challenger is not None or plan.shadow is not None:
        rs.serving.rollback(actor="test", reason="restore the shared app")
    if rs.serving.plan().champion != original.champion:
        rs.serving.deploy(str(original.champion), actor="test", reason="restore the shared app")


def served_plan(url: str) -> dict:
    """The plan ``/healthz`` shows; the ingress's 5xx while a move settles is retried (for at most 60 s)."""
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.get(f"{url}/healthz", timeout=30)
        if answer.status_code == 200 or time.monotonic() > deadline:
            assert answer.status_code == 200, answer.text
            return answer.json()["plan"]
        time.sleep(0.2)


def snapshot(rs, url: str) -> tuple:
    """What an action could change: the saved plan, the served plan, the aliases, the audit log's length."""
    return (rs.serving.plan(), served_plan(url), rs.models.registry.aliases(rs.models.name), len(read_audit(rs.storage)))


def test_the_page_is_served_open_with_its_assets(served):
    _, url = served
    deadline = time.monotonic() + 60  # the ingress may learn the app's routes just after `serve up` returns
    while (page := httpx.get(f"{url}/", timeout=30)).status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<svg id=\"drift-chart\"" in page.text
    script = httpx.get(f"{url}/dashboard/static/dashboard.js", timeout=30)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    missing = httpx.get(f"{url}/dashboard/static/secret.py", timeout=30)
    assert missing.status_code == 404 and missing.json()["field"] == "name"


def test_summary_shows_versions_with_lineage_the_traffic_and_the_audit_log(served):
    rs, url = served
    summary = httpx.get(f"{url}/v1/dashboard/summary", timeout=60).json()
    champion = rs.serving.plan().champion
    assert summary["plan"]["champion"] == champion
    assert summary["traffic"] == [{"version": champion, "role": "champion", "percent": 100.0}]
    registered = rs.models.registry.get(rs.models.name, champion)
    row = next(r for r in summary["versions"] if r["version"] == champion)
    assert row["serving"] == "champion" and "champion" in row["aliases"]
    assert row["lineage"]["dataset_version"] == registered.lineage["dataset_version"]
    assert row["lineage"]["run_id"] == registered.run_id and row["metrics"]
    assert any(d["action"] == "serve.up" for d in row["deployments"])
    assert {r["version"] for r in summary["versions"]} == {v.version for v in rs.models.registry.list_versions(
        rs.models.name)}
    events = httpx.get(f"{url}/v1/dashboard/audit", params={"limit": 5}, timeout=60).json()["events"]
    assert len(events) == min(5, len(read_audit(rs.storage))) and events[0]["at"] >= events[-1]["at"]
    assert httpx.get(f"{url}/v1/dashboard/drift", params={"last": 0}, timeout=30).json()["field"] == "last"


def test_admin_promote_and_rollback_move_the_served_plan_audited_as_the_dashboard(served, restored):
    rs, url = served
    before = rs.serving.plan().champion
    other = next(v.version for v in rs.models.registry.list_versions(rs.models.name) if v.version != before)
    promoted = httpx.post(f"{url}/v1/admin/promote", json={"version": other, "reason": "dashboard test"}, timeout=120)
    assert promoted.status_code == 200, promoted.text
    assert served_plan(url)["champion"] == other
    event = read_audit(rs.storage, "deploy.")[-1]
    assert event["actor"] == "dashboard" and event["reason"] == "dashboard test" and event["applied"]
    back = httpx.post(f"{url}/v1/admin/rollback", json={}, timeout=120)
    assert back.status_code == 200, back.text
    assert served_plan(url)["champion"] == before
    assert read_audit(rs.storage, "rollback")[-1]["actor"] == "dashboard"


def test_malformed_or_impossible_admin_actions_are_4xx_naming_the_field_and_change_nothing(served):
    rs, url = served
    before = snapshot(rs, url)
    cases = [("promote", b"{", 400, "body"), ("promote", b"[1]", 422, "body"),
             ("promote", b'{"versoin": 2}', 422, "versoin"), ("promote", b'{"version": true}', 422, "version"),
             ("rollback", b'{"to": -1}', 422, "to"), ("retrain", b'{"reason": ["x"]}', 422, "reason"),
             ("promote", b'{"version": 99}', 404, "version"), ("promote", b'{"version": "no-such-alias"}', 404, "version"),
             ("rollback", b'{"to": 42}', 404, "to")]
    for action, body, status, field in cases:
        answer = httpx.post(f"{url}/v1/admin/{action}", content=body, headers={"content-type": "application/json"},
                            timeout=60)
        assert (answer.status_code, answer.json().get("field")) == (status, field), (action, body, answer.text)
        assert answer.json()["error"].startswith(f"{field}:") or status == 404
    for action in ("promote", "retrain"):  # no canary to promote; no monitor running to retrain
        answer = httpx.post(f"{url}/v1/admin/{action}", json={}, timeout=60)
        assert answer.status_code == 409, answer.text
    assert "no canary" in httpx.post(f"{url}/v1/admin/promote", json={}, timeout=60).json()["error"]
    assert snapshot(rs, url) == before


# ---------------------------------------------------------------- with API keys (auth on)

def wait_for_status(url: str, status: int, headers: dict | None = None, timeout_s: float = 60.0) -> None:
    """Poll the summary until it answers ``status`` (replicas re-read the keys every auth_refresh_s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/v1/dashboard/summary", headers=headers, timeout=30).status_code == status:
            time.sleep(2.5)  # every replica has read the keys since (serve.auth_refresh_s: 2)
            return
        time.sleep(0.3)
    raise AssertionError(f"the dashboard never answered {status}")


@pytest.fixture(scope="module")
def keys(served):
    """An admin and a predict key on the served app (auth turns on); revoked afterwards (auth off again)."""
    rs, url = served
    made = {role: rs.keys.create(role, name=f"dashboard-test-{role}", actor="test") for role in ("admin", "predict")}
    try:
        wait_for_status(url, 401)
        yield {role: made[role]["key"] for role in made}
    finally:
        for record in made.values():
            rs.keys.revoke(record["id"], actor="test")
        wait_for_status(url, 200)


def test_without_an_admin_key_the_data_and_the_actions_are_refused(served, keys):
    rs, url = served
    before = snapshot(rs, url)
    predict = {"authorization": f"Bearer {keys['predict']}"}
    for headers, status in [(None, 401), ({"authorization": "Bearer nope"}, 401), (predict, 403)]:
        for action in ("promote", "rollback", "retrain"):
            answer = httpx.post(f"{url}/v1/admin/{action}", json={"version": 2} if action == "promote" else {},
                                headers=headers, timeout=60)
            assert (answer.status_code, answer.json()["field"]) == (status, "authorization"), answer.text
        summary = httpx.get(f"{url}/v1/dashboard/summary", headers=headers, timeout=60)
        assert summary.status_code == status
    assert httpx.get(f"{url}/", timeout=30).status_code == 200  # the page itself holds no data
    admin = {"authorization": f"Bearer {keys['admin']}"}
    assert httpx.get(f"{url}/v1/dashboard/summary", headers=admin, timeout=60).status_code == 200
    assert snapshot(rs, url) == before


@pytest.fixture(scope="module")
def drift_history(served):
    """Monitor windows on the served app: 2 steady windows, then 2 of covariate drift (the real loop
    over prediction-log files, in-process); removed afterwards with the log files written for them."""
    from raysys.monitoring.loop import MonitorLoop

    rs, _ = served
    cfg = yaml.safe_load(rs.config_path.read_text())
    monitored = system_from({**cfg, "monitor": {**cfg.get("monitor", {}), **MONITOR}}, Path(cfg["storage"]["root"]))
    train = monitored.data.read("latest", split="train").to_pandas()
    steady = train.sample(200, random_state=0)
    numeric = steady.select_dtypes("number").columns.drop("target")
    shifted = steady.assign(**{c: steady[c] * 1.5 for c in numeric})
    champion = rs.serving.plan().champion
    parts = [write_log_part(rs, "predictions", answered(rs, frame, champion), seq=i)
             for i, frame in enumerate((steady, shifted))]
    try:
        windows = MonitorLoop(monitored, launch=lambda job: None).step()["windows"]
        assert len(windows) == 4
        yield windows
    finally:
        for path in parts:
            rs.storage.fs.delete_file(rs.storage.path(path))
        rs.storage.fs.delete_dir(rs.storage.path("monitor", rs.serving.app_name))


def test_drift_history_is_served_per_feature(served, keys, drift_history):
    _, url = served
    drift = httpx.get(f"{url}/v1/dashboard/drift", headers={"authorization": f"Bearer {keys['admin']}"},
                      timeout=60).json()
    assert drift["windows"] == len(drift_history)
    mean_radius = drift["features"]["mean_radius"]
    assert [p["seq"] for p in mean_radius] == drift_history
    assert not mean_radius[0]["drifted"] and mean_radius[-1]["drifted"]  # steady, then the shift


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (`apt-get install chromium`, as .ci/run "
                                             "does; or set RAYSYS_TEST_CHROMIUM to its path)")
def test_the_page_in_a_browser_shows_the_system_and_runs_a_rollback_only_with_an_admin_key(
        served, keys, drift_history, restored, tmp_path):
    from playwright.sync_api import sync_playwright

    rs, url = served
    champion = rs.serving.plan().champion
    other = next(v.version for v in rs.models.registry.list_versions(rs.models.name) if v.version != champion)
    rs.serving.deploy(str(other), "canary", percent=10, actor="test", reason="a canary for the page to roll back")
    console, failures = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.on("console", lambda message: console.append(message) if message.type == "error" else None)
            page.on("pageerror", lambda error: failures.append(error))
            page.goto(f"{url}/")  # auth is on: without a key the page shows the 401
            page.wait_for_selector("#status.error:has-text('401')")
            page.fill("#key", keys["admin"])
            page.dispatch_event("#key", "change")
            page.wait_for_selector(f"#champion:text-is('v{champion}')")
            console.clear()
            page.reload()  # the key is kept for the tab (sessionStorage): the page loads cleanly
            page.wait_for_selector(f"#champion:text-is('v{champion}')")
            page.wait_for_selector("#drift-chart circle.point")
            assert page.locator("#drift-chart circle.point").count() >= 2 * len(drift_history)
            assert page.locator("#drift-chart polyline").count() > 1
            assert page.locator("#incidents tbody tr").count() >= 1  # the drift opened an incident
            assert page.locator("#traffic tbody tr").count() == 2  # champion and canary
            assert page.locator("#audit tbody tr").count() >= 1
            assert not console and not failures, [m.text for m in console] + [str(f) for f in failures]

            page.fill("#key", "")  # no key: the click is refused, nothing changes
            page.dispatch_event("#key", "change")
            page.click("button[data-action=rollback]")
            page.wait_for_selector("#action-result.error")
            assert "401" in page.text_content("#action-result")
            assert served_plan(url)["challenger"] == other

            page.fill("#key", keys["admin"])
            page.dispatch_event("#key", "change")
            page.click("button[data-action=rollback]")
            page.wait_for_selector("#action-result.ok:text('rollback done')", timeout=120_000)
            plan = served_plan(url)
            assert plan["challenger"] is None and plan["champion"] == champion
            assert read_audit(rs.storage, "rollback")[-1]["actor"] == "dashboard"
            folder = Path(os.environ.get("RAYSYS_TEST_ARTIFACTS") or tmp_path)
            folder.mkdir(parents=True, exist_ok=True)
            shot = folder / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"dashboard screenshot: {shot}")
            assert shot.stat().st_size > 10_000
            assert not failures, [str(f) for f in failures]
        finally:
            browser.close()


def test_the_config_replicas_get_holds_no_secret_and_masks_to_itself(tmp_path):
    """Replicas build their System from the masked config (settings["config"]); masking that again
    changes nothing, so a move made from the dashboard keeps the deployment's settings."""
    from raysys.config import SystemConfig, parse_config
    from raysys.secrets import mask_config
    from tests.modeling.test_train import sklearn_cfg

    cfg = sklearn_cfg("breast_cancer", "binary")
    cfg["data"]["source"] = {"kind": "sql", "url": "postgresql+psycopg://app:s3cret-pw@db/prod", "table": "t"}
    masked = mask_config(parse_config({**cfg, "storage": {"root": str(tmp_path)}}))
    assert "s3cret-pw" not in str(masked)
    assert mask_config(SystemConfig.model_validate(masked)) == masked
