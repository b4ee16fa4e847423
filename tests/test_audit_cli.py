"""``raysys audit`` and ``raysys alerts list`` as a user runs them (subprocesses, a clean shell)."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from raysys import audit
from raysys.errors import RaysysError
from raysys.monitoring.alerts import Finding
from raysys.monitoring.incidents import IncidentBook, write_incidents
from raysys.storage import Storage
from tests.user_shell import BIN, clean_env

CONFIG = """\
project: {{name: shop}}
storage: {{root: {root}}}
serve: {{app_name: {app}}}
data:
  name: churn
  source: {{kind: synthetic, rows: 100}}
  label: churned
  task: binary
"""


def raysys(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``raysys ARGS`` run in ``tmp_path`` as a new user would."""
    return subprocess.run([str(BIN / "raysys"), *args], capture_output=True, text=True,
                          timeout=300, check=False, cwd=tmp_path, env=clean_env(tmp_path / "home"))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A config and a storage root holding audit events (one backdated two hours) and incidents."""
    tmp = tmp_path_factory.mktemp("audit-cli")
    storage = Storage.open(str(tmp / "store"))
    (tmp / "raysys.yaml").write_text(CONFIG.format(root=tmp / "store", app="shop-app"))
    old = datetime.now(timezone.utc) - timedelta(hours=2)  # an event as record() wrote it then
    storage.write_json({"at": old.isoformat(), "action": "serve.deploy", "actor": "ann",
                        "reason": "", "app": "shop-app", "version": 1},
                       audit.AUDIT_DIR, f"{old.strftime('%Y%m%dT%H%M%S%f')}-00000000.json")
    linked = {"app": "shop-app", "incident": "inc-0001"}
    audit.record(storage, "monitor.alert.open", {**linked, "rule": "drift"}, actor="raysys-monitor",
                 reason="drift in age")
    audit.record(storage, "monitor.retrain.start", linked, actor="raysys-monitor", reason="drift")
    book = IncidentBook(resolve_after=1)
    drift = Finding("drift", "warning", "drift in age", {"features": {"age": {"p_value": 1e-6}}})
    book.observe([drift], 1, 0.0)
    quality = Finding("quality", "critical", "live accuracy 0.61", {"value": 0.61}, "v1")
    book.observe([quality], 2, 1.0)
    write_incidents(storage, "shop-app", book)  # drift resolved, quality@v1 open
    return tmp


def test_audit_filters_by_action_and_since(project):
    tmp = project
    every = json.loads(raysys(tmp, "audit", "--json").stdout)["events"]
    assert [e["action"] for e in every] == [
        "serve.deploy", "monitor.alert.open", "monitor.retrain.start"]
    recent = json.loads(raysys(tmp, "audit", "--since", "1h", "--json").stdout)["events"]
    assert [e["action"] for e in recent] == ["monitor.alert.open", "monitor.retrain.start"]
    since = (datetime.now(timezone.utc) - timedelta(hours=3)).isoformat()
    text = raysys(tmp, "audit", "--since", since, "--action", "monitor.alert")
    assert text.returncode == 0 and "monitor.alert.open" in text.stdout
    assert "incident=inc-0001" in text.stdout
    assert "monitor.retrain" not in text.stdout and "serve.deploy" not in text.stdout


def test_alerts_list_all_and_open(project):
    tmp = project
    listed = json.loads(raysys(tmp, "alerts", "list", "--json").stdout)
    assert listed["app"] == "shop-app"
    assert [(i["rule"], i["subject"], i["status"]) for i in listed["incidents"]] == [
        ("quality", "v1", "open"), ("drift", "", "resolved")]
    opened = raysys(tmp, "alerts", "list", "--open")
    assert opened.returncode == 0 and "quality@v1" in opened.stdout
    assert "drift in age" not in opened.stdout


def test_alerts_list_before_any_incident(tmp_path):
    (tmp_path / "raysys.yaml").write_text(CONFIG.format(root=tmp_path / "store", app="other"))
    result = raysys(tmp_path, "alerts", "list")
    assert result.returncode == 0 and "other: no incidents" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["audit", "--since", "5 parsecs", "--json"], "since: '5 parsecs' is neither an ISO time"),
    (["alerts", "list", "-c", "missing.yaml"], "missing.yaml"),
])
def test_bad_input_is_a_one_line_error(project, args, message):
    tmp = project
    result = raysys(tmp, *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") and message in result.stderr
    if "--json" in args:
        assert message in json.loads(result.stdout)["error"]


def test_parse_since_takes_durations_and_iso_times():
    now = datetime(2026, 1, 31, 12, 0, tzinfo=timezone.utc)
    assert audit.parse_since("90s", now) == now - timedelta(seconds=90)
    assert audit.parse_since("1.5h", now) == now - timedelta(minutes=90)
    assert audit.parse_since("2d", now) == now - timedelta(days=2)
    nine_utc = datetime(2026, 1, 31, 9, tzinfo=timezone.utc)
    assert audit.parse_since("2026-01-31T10:00:00+01:00") == nine_utc
    assert audit.parse_since("2026-01-31T10:00:00").tzinfo is not None  # local time
    with pytest.raises(RaysysError, match="since: 'soon' is neither"):
        audit.parse_since("soon")


def test_read_audit_since_keeps_the_events_from_then_on(tmp_path):
    storage = Storage.open(str(tmp_path))
    first = audit.record(storage, "serve.up", {"app": "a"})
    second = audit.record(storage, "serve.down", {"app": "a"})
    first_at, second_at = (datetime.fromisoformat(e["at"]) for e in (first, second))
    assert audit.read_audit(storage, since=second_at) == [second]
    assert audit.read_audit(storage, since=first_at) == [first, second]
    assert audit.read_audit(storage, "serve.up", since=first_at) == [first]
