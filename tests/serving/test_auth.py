"""API keys on the served app: every route × (no key, invalid, revoked, wrong role, right role, admin).

Keys are created on the shared served app for this module only: the teardown revokes every
one and waits until the replicas answer without a key again (``serve.auth: auto``), so later
tests see the app as they left it. The CLI runs as a user would, in a clean shell.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.serving.test_server import raw_rows
from tests.test_access import access_files
from tests.user_shell import BIN, clean_env

REFRESH_S = 2.0  # serve.auth_refresh_s (default)
OPEN = [("GET", "/healthz"), ("GET", "/v2"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready")]


def raysys(rs, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a clean shell, on the served app's config."""
    return subprocess.run([str(BIN / "raysys"), *args, "-c", str(rs.config_path)], capture_output=True, text=True,
                          timeout=300, check=False, cwd=tmp_path, env=clean_env(tmp_path / "home"))


def wait_until(probe, expected: int, timeout_s: float = 60.0) -> int:
    """Poll ``probe()`` (a status code) until it is ``expected``; the last status."""
    deadline = time.monotonic() + timeout_s
    status = probe()
    while status != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        status = probe()
    return status


@pytest.fixture(scope="module")
def rows(served) -> list[dict]:
    return raw_rows(served[0], 2)


def routes(rs, rows: list[dict]) -> list[tuple[str, str, dict | None, str, int]]:
    """(method, path, JSON body, role needed, status of a granted request) for every guarded route."""
    name = rs.models.name
    meta = rs.models.load("champion").state.input_columns
    inputs = [{"name": c, "shape": [2], "datatype": "FP64", "data": [r[c] for r in rows]} for c in meta]
    return [("POST", "/v1/predict", {"records": rows}, "predict", 200),
            ("GET", f"/v2/models/{name}", None, "predict", 200),
            ("GET", f"/v2/models/{name}/ready", None, "predict", 200),
            ("POST", f"/v2/models/{name}/infer", {"inputs": inputs}, "predict", 200),
            ("POST", "/v1/feedback", {"request_id": "auth-test", "label": "1"}, "feedback", 202)]


def call(url: str, method: str, path: str, body=None, key: str | None = None, header: str | None = None):
    headers = {"Authorization": header if header is not None else f"Bearer {key}"} if key or header else {}
    return requests.request(method, f"{url}{path}", json=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def keys(served, tmp_path_factory):
    """Keys of every role and a revoked one, made with the CLI; all revoked (auth off again) after."""
    rs, url = served
    folder, made, name = tmp_path_factory.mktemp("keys-cli"), {}, rs.models.name
    try:
        for role in ("predict", "feedback", "admin", "revoked"):
            done = raysys(rs, folder, "keys", "create", "--role", "predict" if role == "revoked" else role,
                          "--name", f"test {role}", "--json")
            assert done.returncode == 0, done.stderr
            made[role] = json.loads(done.stdout)
        revoked = raysys(rs, folder, "keys", "revoke", made["revoked"]["id"])
        assert revoked.returncode == 0, revoked.stderr
        assert wait_until(lambda: call(url, "GET", f"/v2/models/{name}/ready").status_code, 401) == 401
        yield {role: key["key"] for role, key in made.items()} | {"ids": [k["id"] for k in made.values()]}
    finally:
        for key in rs.keys.list(include_revoked=False):
            rs.keys.revoke(key["id"], actor="test teardown")
        assert wait_until(lambda: call(url, "GET", f"/v2/models/{name}/ready").status_code, 200) == 200


def test_every_route_answers_each_kind_of_caller(served, keys, rows):
    rs, url = served
    for method, path, body, role, granted in routes(rs, rows):
        wrong = "feedback" if role == "predict" else "predict"
        callers = {"none": {}, "invalid": {"header": "Bearer rsk_0000beef_" + "a" * 43},
                   "revoked": {"key": keys["revoked"]}, "wrong role": {"key": keys[wrong]},
                   "right role": {"key": keys[role]}, "admin": {"key": keys["admin"]}}
        seen = {}
        for caller, credentials in callers.items():
            answer = call(url, method, path, body, **credentials)
            if answer.status_code in (401, 403):
                assert answer.json()["field"] == "authorization" and answer.json()["error"], answer.text
            seen[caller] = answer.status_code
        assert seen == {"none": 401, "invalid": 401, "revoked": 401, "wrong role": 403,
                        "right role": granted, "admin": granted}, path
    for method, path in OPEN:
        assert call(url, method, path).status_code == 200, path
        assert call(url, method, path, header="Bearer nonsense").status_code == 200, path


@pytest.mark.parametrize("header", [
    "Bearer " + "a" * 10_000, "Bearer " + "rsk_" + "é" * 60, "ключ", "Basic dXNlcjpwYXNz", "Bearer", "Bearer    ",
    "rsk_0000beef_" + "a" * 43])
def test_hostile_authorization_headers_are_401_never_5xx(served, keys, rows, header):
    _, url = served
    raw = header.encode("utf-8")  # non-ASCII bytes on the wire, as a hostile client sends them
    answer = requests.post(f"{url}/v1/predict", data=json.dumps({"records": rows}),
                           headers={"Authorization": raw, "Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 401 and answer.json()["field"] == "authorization"
    assert answer.headers["www-authenticate"] == "Bearer"
    assert call(url, "POST", "/v1/predict", {"records": rows}, keys["predict"]).status_code == 200


def test_a_key_revoked_with_the_cli_is_refused_without_a_restart(served, keys, tmp_path):
    rs, url = served
    created = json.loads(raysys(rs, tmp_path, "keys", "create", "--role", "predict", "--json").stdout)
    assert wait_until(lambda: call(url, "GET", "/v2/models/" + rs.models.name, key=created["key"]).status_code,
                      200) == 200
    done = raysys(rs, tmp_path, "keys", "revoke", created["id"], "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["revoked_at"], done.stderr
    assert wait_until(lambda: call(url, "GET", "/v2/models/" + rs.models.name, key=created["key"]).status_code,
                      401) == 401
    again = raysys(rs, tmp_path, "keys", "revoke", created["id"])
    assert again.returncode == 1 and "already revoked" in again.stderr


def test_the_cli_refuses_bad_input_and_changes_nothing(served, keys, tmp_path):
    rs, _ = served
    before = access_files(rs.storage)
    for args, message in [(("create", "--role", "root"), "role: 'root' is not a role"),
                          (("revoke", "0000beef"), "id: no key '0000beef'")]:
        done = raysys(rs, tmp_path, "keys", *args)
        assert done.returncode == 1 and f"error: {message}" in done.stderr, done.stderr
    assert access_files(rs.storage) == before
    listed = json.loads(raysys(rs, tmp_path, "keys", "list", "--json").stdout)["keys"]
    assert [k["id"] for k in listed if k["id"] in keys["ids"]] == keys["ids"]
    assert all("key" not in k and "hash" not in k and "salt" not in k for k in listed)


def test_openapi_documents_the_bearer_scheme(served, keys):
    _, url = served
    spec = requests.get(f"{url}/openapi.json", timeout=30).json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert spec["paths"]["/v1/predict"]["post"]["security"] == [{"bearer": []}]
    assert {"401", "403"} <= set(spec["paths"]["/v1/feedback"]["post"]["responses"])
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_no_key_is_ever_written_in_clear(served, keys):
    """Every byte under the storage root and in the Ray session's logs: no key, no key's secret."""
    import ray

    rs, _ = served
    secrets = [keys[r].encode() for r in ("predict", "feedback", "admin", "revoked")]
    secrets += [s.split(b"_", 2)[2] for s in secrets]  # rsk_<id>_<secret>: the secret may hold "_"
    roots = [Path(rs.storage.base), Path(ray._private.worker._global_node.get_session_dir_path())]
    files = [p for root in roots for p in root.rglob("*") if p.is_file()]
    assert len(files) > 10
    leaked = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:  # a socket or a file removed meanwhile
            continue
        leaked += [str(path) for secret in secrets if secret in data]
    assert leaked == []
