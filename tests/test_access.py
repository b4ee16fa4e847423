"""The API key store (``raysys.access``) and the replica's guard, without Ray or HTTP.

Keys are random, shown once, stored as salted hashes; a bad role, an unknown id or revoking
twice is an error that changes nothing; the guard refuses what it must with 401/403 and sees
created and revoked keys within ``refresh_s``.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import pytest
from starlette.requests import Request

from raysys import audit
from raysys.access import ROLES, KeyStore, allows, auth_active, key_id, new_key, read_keys, verify
from raysys.config import ServeConfig
from raysys.errors import NotFound, RaysysError
from raysys.serving.auth import Guard, bearer_token
from raysys.serving.payloads import RequestError
from raysys.storage import Storage


@pytest.fixture
def store(tmp_path) -> KeyStore:
    return KeyStore(Storage.open(str(tmp_path / "root")))


def access_files(storage: Storage) -> dict[str, bytes]:
    """Every file the key store wrote, by path under ``access/``."""
    root = Path(storage.path("access"))
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def every_byte(root) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_a_created_key_is_returned_once_and_stored_only_hashed(store, tmp_path):
    created = store.create("predict", name="web app", actor="ana")
    key = created["key"]
    assert key_id(key) == created["id"] and len(key) > 40
    assert {k: created[k] for k in ("name", "role", "created_by", "revoked_at")} == {
        "name": "web app", "role": "predict", "created_by": "ana", "revoked_at": None}
    assert store.list() == [{k: v for k, v in created.items() if k != "key"}]
    stored = every_byte(tmp_path / "root")
    assert key.encode() not in stored and key.split("_", 2)[2].encode() not in stored
    (record,) = read_keys(store.storage)
    assert verify(record, key) and not verify(record, key[:-1] + ("A" if key[-1] != "A" else "B"))
    events = audit.read_audit(store.storage, "keys.")
    assert [(e["action"], e["key_id"], e["role"], e["name"]) for e in events] == [
        ("keys.create", created["id"], "predict", "web app")]


def test_two_keys_never_share_a_key_or_a_salt(store):
    first, second = store.create("admin"), store.create("admin")
    assert first["key"] != second["key"] and first["id"] != second["id"]
    salts = {k.salt for k in read_keys(store.storage)}
    assert len(salts) == 2


def test_revoking_marks_the_key_and_audits_it(store):
    created = store.create("feedback", actor="ana")
    revoked = store.revoke(created["id"], actor="bo")
    assert revoked["revoked_by"] == "bo" and revoked["revoked_at"] is not None
    assert store.list(include_revoked=False) == []
    assert [e["action"] for e in audit.read_audit(store.storage, "keys.")] == ["keys.create", "keys.revoke"]


@pytest.mark.parametrize("mistake, error, field", [
    (lambda s: s.create("root"), RaysysError, "role"),
    (lambda s: s.create("predict", name="x" * 500), RaysysError, "name"),
    (lambda s: s.create("predict", name="a\nb"), RaysysError, "name"),
    (lambda s: s.revoke("0000beef"), NotFound, "id"),
])
def test_a_bad_request_is_an_error_naming_the_field_and_changes_nothing(store, mistake, error, field):
    before = store.create("predict")
    stored = access_files(store.storage)
    with pytest.raises(error, match=f"^{field}: "):
        mistake(store)
    assert access_files(store.storage) == stored
    assert store.list() == [{k: v for k, v in before.items() if k != "key"}]
    assert [e["action"] for e in audit.read_audit(store.storage, "keys.")] == ["keys.create"]


def test_revoking_twice_is_an_error_and_changes_nothing(store):
    ident = store.create("predict")["id"]
    store.revoke(ident)
    stored = access_files(store.storage)
    with pytest.raises(RaysysError, match=f"^id: key '{ident}' was already revoked"):
        store.revoke(ident)
    assert access_files(store.storage) == stored
    assert len(audit.read_audit(store.storage, "keys.revoke")) == 1


def test_roles_and_modes():
    assert [r for r in ROLES if allows("admin", r)] == list(ROLES)
    assert allows("predict", "predict") and not allows("predict", "feedback") and not allows("feedback", "admin")
    assert not auth_active("auto", []) and auth_active("on", []) and not auth_active("off", [])


@pytest.mark.parametrize("text", ["", "Bearer", "rsk_", "rsk_zzzzzzzz_" + "a" * 43, "rsk_0000beef_" + "a" * 10_000,
                                  "rsk_0000beef_ääääääääääääääääääääääää", "x" * 100_000])
def test_anything_but_a_well_formed_key_has_no_id(text):
    assert key_id(text) is None


@pytest.mark.parametrize("value", [False, "off"])
def test_serve_auth_off_reads_as_off_from_yaml(value):
    assert ServeConfig(auth=value).auth == "off"
    assert ServeConfig(auth=True).auth == "on" and ServeConfig().auth == "auto"
    with pytest.raises(ValueError, match="auth"):
        ServeConfig(auth="sometimes")


# ---------------------------------------------------------------------------- the guard


def request(authorization: str | bytes | None) -> Request:
    headers = [] if authorization is None else [(
        b"authorization", authorization if isinstance(authorization, bytes) else authorization.encode("latin-1"))]
    return Request({"type": "http", "method": "POST", "path": "/v1/predict", "headers": headers})


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def status_of(guard: Guard, authorization, role: str = "predict"):
    """The guard's answer: the principal's role, or the refusal's status (and its field)."""
    try:
        principal = asyncio.run(guard.check(request(authorization), role))
    except RequestError as error:
        assert error.field == "authorization"
        return error.status
    return principal.role if principal else None


def test_the_guard_answers_401_403_or_the_principal(store):
    clock = Clock()
    guard = Guard(store.storage, "auto", refresh_s=2.0, clock=clock)
    assert status_of(guard, None) is None  # auto without keys: open
    predict, admin = store.create("predict")["key"], store.create("admin")["key"]
    assert status_of(guard, None) is None  # not re-read yet
    clock.now = 2.0
    assert status_of(guard, None) == 401
    assert status_of(guard, f"Bearer {predict}") == "predict"
    assert status_of(guard, f"bearer  {predict} ") == "predict"
    assert status_of(guard, f"Bearer {predict}", "feedback") == 403
    assert status_of(guard, f"Bearer {admin}", "feedback") == "admin"
    assert status_of(guard, predict) == 401  # no scheme
    assert status_of(guard, f"Basic {predict}") == 401
    assert status_of(guard, f"Bearer {predict[:-2]}xy") == 401  # right id, wrong secret
    assert status_of(guard, "Bearer " + "a" * 10_000) == 401
    assert status_of(guard, b"Bearer " + "ключ".encode()) == 401
    assert status_of(guard, "Bearer rsk_é_ü".encode("latin-1")) == 401


def test_a_revoked_key_is_refused_once_the_guard_reads_again(store):
    clock = Clock()
    key = store.create("predict")
    other = store.create("predict")  # auth stays on after the revocation
    guard = Guard(store.storage, "auto", refresh_s=2.0, clock=clock)
    assert status_of(guard, f"Bearer {key['key']}") == "predict"  # verified and cached
    store.revoke(key["id"])
    clock.now = 2.0
    assert status_of(guard, f"Bearer {key['key']}") == 401
    assert status_of(guard, f"Bearer {other['key']}") == "predict"


def test_auth_on_without_keys_refuses_and_off_never_asks(store):
    assert status_of(Guard(store.storage, "on"), None) == 401
    store.create("predict")
    assert status_of(Guard(store.storage, "off"), None) is None
    assert status_of(Guard(store.storage, "off"), "Bearer nonsense") is None


@pytest.mark.parametrize("where", [("keys", "0000beef.json"), ("revoked", "0000beef.json"), ("keys.json",)])
def test_an_unreadable_keys_file_refuses_rather_than_opens(store, where):
    store.storage.write_bytes(b"{not json", "access", *where)
    with pytest.raises(ValueError):
        read_keys(store.storage)
    assert status_of(Guard(store.storage, "auto"), None) == 401


def test_concurrent_creates_and_a_revoke_lose_neither_a_key_nor_the_revocation(store):
    """Two admins at once: every created key is stored and the revocation holds (nothing is rewritten)."""
    victim = store.create("admin")["id"]
    with ThreadPoolExecutor(8) as pool:
        revoking = pool.submit(store.revoke, victim)
        created = list(pool.map(lambda i: store.create("predict", name=f"k{i}"), range(16)))
    revoking.result()
    keys = {k.id: k for k in read_keys(store.storage)}
    assert set(keys) == {victim, *(c["id"] for c in created)}
    assert not keys[victim].active
    assert all(keys[c["id"]].active and verify(keys[c["id"]], c["key"]) for c in created)
    assert len(audit.read_audit(store.storage, "keys.create")) == 17


def test_a_key_revoked_by_two_callers_at_once_is_revoked_once(store):
    ident = store.create("predict")["id"]
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda _: _outcome(store.revoke, ident), range(4)))
    assert sorted(outcomes) == ["already revoked"] * 3 + ["revoked"], outcomes
    assert len(audit.read_audit(store.storage, "keys.revoke")) == 1


def _outcome(call, *args) -> str:
    try:
        call(*args)
    except RaysysError as error:
        assert "already revoked" in str(error)
        return "already revoked"
    return "revoked"


def test_keys_in_the_former_single_file_still_open_and_can_be_revoked(store):
    """Keys kept in ``access/keys.json`` by earlier raysys are read, and revoked without rewriting it."""
    now = datetime.now(timezone.utc)
    (old, old_key), (gone, gone_key) = (new_key("predict", name, "ana", now, set()) for name in ("old", "gone"))
    gone = gone.__class__(**{**asdict(gone), "revoked_at": now.isoformat(), "revoked_by": "ana"})
    store.storage.write_bytes(json.dumps({"keys": [asdict(old), asdict(gone)]}).encode(), "access", "keys.json")
    legacy = store.storage.read_bytes("access", "keys.json")
    assert {k["name"]: k["revoked_at"] is None for k in store.list()} == {"old": True, "gone": False}
    guard = Guard(store.storage, "auto", refresh_s=2.0, clock=(clock := Clock()))
    assert status_of(guard, f"Bearer {old_key}") == "predict" and status_of(guard, f"Bearer {gone_key}") == 401
    admin = store.create("admin")["key"]  # a new key beside them (auth stays on after the revocation)
    store.revoke(old.id)
    clock.now = 2.0
    assert status_of(guard, f"Bearer {old_key}") == 401 and status_of(guard, f"Bearer {admin}") == "admin"
    assert {k["name"]: k["revoked_at"] is None for k in store.list()} == {"old": False, "gone": False, "admin-" + admin[4:12]: True}
    assert store.storage.read_bytes("access", "keys.json") == legacy


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer   ", "Token abc", "abc"])
def test_malformed_headers_are_401(header):
    with pytest.raises(RequestError) as refused:
        bearer_token(header)
    assert refused.value.status == 401 and refused.value.field == "authorization"


def test_serve_up_warns_only_when_auth_is_off():
    from raysys.serving.service import open_api_warning

    warning = open_api_warning("off", "http://127.0.0.1:8000")
    assert warning and "serve.auth is off" in warning and "http://127.0.0.1:8000" in warning
    assert open_api_warning("auto", "u") is None and open_api_warning("on", "u") is None


def test_a_key_refused_before_the_guard_saw_it_is_accepted_after(store):
    clock = Clock()
    store.create("admin")
    guard = Guard(store.storage, "auto", refresh_s=2.0, clock=clock)
    late = store.create("predict")["key"]
    assert status_of(guard, f"Bearer {late}") == 401
    clock.now = 2.0
    assert status_of(guard, f"Bearer {late}") == "predict"


def test_an_api_key_in_an_error_or_log_line_is_masked(store):
    from raysys.secrets import mask_text

    key = store.create("predict", name="web")["key"]
    masked = mask_text(f"request with {key} failed; header Authorization: Bearer {key}")
    assert key not in masked and key.split("_", 2)[2] not in masked and "request with" in masked
