"""API keys: who may call the serving app, with which role; stored hashed, never in clear.

A key reads ``rsk_<id>_<secret>``: the id (8 hex digits) finds the record, the secret is
random (:func:`secrets.token_urlsafe`). Only a salted scrypt hash of the whole key is kept, in
``access/keys/<id>.json`` under the storage root; the key itself is returned once by
:meth:`KeyStore.create` and never stored, logged or audited. Roles: ``predict``
(``/v1/predict``, ``/v2/models/*``), ``feedback`` (``/v1/feedback``), ``admin`` (everything).
Revoking adds ``access/revoked/<id>.json`` and keeps the record, so the audit trail can name it.

Nothing is ever rewritten: each file is created once, exclusively (:meth:`Storage.create_json`),
so two admins creating and revoking keys at the same moment lose neither a key nor a
revocation. Keys in ``access/keys.json`` (where raysys kept them before) are still read.

The functions above :class:`KeyStore` are pure; the store is the storage edge.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import re
import secrets
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any

from raysys import audit
from raysys.errors import NotFound, RaysysError
from raysys.storage import Storage

ROLES = ("predict", "feedback", "admin")
AUTH_MODES = ("auto", "on", "off")
KEYS_DIR = ("access", "keys")
REVOKED_DIR = ("access", "revoked")
LEGACY_KEYS_FILE = ("access", "keys.json")  # read, never written
CREATE_ATTEMPTS = 5  # ids are 32 random bits: a second attempt is already rare
PREFIX = "rsk"
MAX_KEY_CHARS = 128  # a longer bearer token is refused unread (a real key has 56 characters)
MAX_NAME_CHARS = 100
_KEY = re.compile(rf"^{PREFIX}_([0-9a-f]{{8}})_[A-Za-z0-9_-]{{20,100}}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # ~16 MiB and tens of ms per hash; replicas cache successes


@dataclass(frozen=True)
class ApiKey:
    """A stored key: who it is for, what it may do, and the salted hash of the key."""

    id: str
    name: str
    role: str
    created_at: str
    created_by: str
    salt: str
    hash: str
    revoked_at: str | None = None
    revoked_by: str | None = None

    @property
    def active(self) -> bool:
        """Whether the key still opens anything."""
        return self.revoked_at is None

    def public(self) -> dict[str, Any]:
        """What ``keys list`` shows: everything but the salt and hash."""
        return {k: v for k, v in asdict(self).items() if k not in ("salt", "hash")}


def check_role(role: str) -> str:
    """``role`` if it is one of :data:`ROLES`, else an error naming the field."""
    if role not in ROLES:
        raise RaysysError(f"role: {role!r} is not a role; use one of {', '.join(ROLES)}")
    return role


def allows(granted: str, needed: str) -> bool:
    """Whether a key of role ``granted`` may do what needs role ``needed`` (admin may do all)."""
    return granted == needed or granted == "admin"


def key_id(text: str) -> str | None:
    """The id inside a well-formed key, else None (any other text, however long or strange)."""
    if len(text) > MAX_KEY_CHARS:
        return None
    found = _KEY.match(text)
    return found.group(1) if found else None


def hash_key(text: str, salt: bytes) -> str:
    """The slow salted hash stored for a key (scrypt, hex)."""
    return hashlib.scrypt(text.encode(), salt=salt, dklen=32, **_SCRYPT).hex()


def verify(record: ApiKey, text: str) -> bool:
    """Whether ``text`` is the key of ``record`` (constant-time comparison of the hashes)."""
    return hmac.compare_digest(hash_key(text, bytes.fromhex(record.salt)), record.hash)


def new_key(role: str, name: str, actor: str, now: datetime, taken: set[str]) -> tuple[ApiKey, str]:
    """A new key of ``role`` (its record and its text), with an id not in ``taken``."""
    check_role(role)
    if len(name) > MAX_NAME_CHARS or any(not c.isprintable() for c in name):
        raise RaysysError(f"name: at most {MAX_NAME_CHARS} printable characters")
    ident = secrets.token_hex(4)
    while ident in taken:
        ident = secrets.token_hex(4)
    text = f"{PREFIX}_{ident}_{secrets.token_urlsafe(32)}"
    salt = secrets.token_bytes(16)
    record = ApiKey(id=ident, name=name or f"{role}-{ident}", role=role, created_at=now.isoformat(),
                    created_by=actor, salt=salt.hex(), hash=hash_key(text, salt))
    return record, text


def auth_active(mode: str, keys: list[ApiKey]) -> bool:
    """Whether requests need a key: ``on``, or ``auto`` once an unrevoked key exists."""
    return mode == "on" or (mode == "auto" and any(k.active for k in keys))


def merge_keys(legacy: Any, records: list[dict], revocations: dict[str, dict]) -> list[ApiKey]:
    """The keys of a legacy ``keys.json`` document and of key files, with their revocations, oldest first."""
    keys = {entry["id"]: ApiKey(**entry) for entry in [*(legacy or {}).get("keys", []), *records]}
    for ident, revocation in revocations.items():
        if ident in keys and keys[ident].active:
            keys[ident] = replace(keys[ident], revoked_at=revocation["revoked_at"], revoked_by=revocation["revoked_by"])
    return sorted(keys.values(), key=lambda k: (k.created_at, k.id))


def read_keys(storage: Storage) -> list[ApiKey]:
    """Every stored key, revoked ones included; an unreadable file is an error, never a missing key."""
    legacy = storage.read_json(*LEGACY_KEYS_FILE) if storage.exists(*LEGACY_KEYS_FILE) else None
    records = [storage.read_json(*KEYS_DIR, name) for name in _json_names(storage, KEYS_DIR)]
    revocations = {name.removesuffix(".json"): storage.read_json(*REVOKED_DIR, name)
                   for name in _json_names(storage, REVOKED_DIR)}
    return merge_keys(legacy, records, revocations)


def _json_names(storage: Storage, parts: tuple[str, ...]) -> list[str]:
    """The names of the ``.json`` files under a directory (not a writer's temporary files)."""
    return sorted(info.base_name for info in storage.list_files(*parts) if info.base_name.endswith(".json"))


class KeyStore:
    """``System.keys``: create, list and revoke API keys (each change audited, never the key)."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def create(self, role: str, name: str = "", actor: str | None = None) -> dict[str, Any]:
        """A new key: its record and, this once, the key itself (``key``)."""
        taken, who = {k.id for k in read_keys(self.storage)}, actor or getpass.getuser()
        for _ in range(CREATE_ATTEMPTS):
            record, text = new_key(role, name, who, datetime.now(timezone.utc), taken)
            if self.storage.create_json(asdict(record), *KEYS_DIR, f"{record.id}.json"):
                break
            taken.add(record.id)  # created by someone else meanwhile
        else:
            raise RaysysError(f"no free key id after {CREATE_ATTEMPTS} attempts; try again")
        audit.record(self.storage, "keys.create", {"key_id": record.id, "name": record.name, "role": role},
                     actor=who)
        return {**record.public(), "key": text}

    def list(self, include_revoked: bool = True) -> list[dict[str, Any]]:
        """Every key's record (no hash, no key), oldest first."""
        return [k.public() for k in read_keys(self.storage) if include_revoked or k.active]

    def revoke(self, ident: str, actor: str | None = None) -> dict[str, Any]:
        """Revoke key ``ident``: requests with it are refused within ``serve.auth_refresh_s``."""
        keys, who = read_keys(self.storage), actor or getpass.getuser()
        found = next((k for k in keys if k.id == ident), None)
        if found is None:
            raise NotFound(f"id: no key {ident!r}; `raysys keys list` shows the ids")
        if not found.active:
            raise RaysysError(f"id: key {ident!r} was already revoked at {found.revoked_at}")
        revoked = replace(found, revoked_at=datetime.now(timezone.utc).isoformat(), revoked_by=who)
        revocation = {"revoked_at": revoked.revoked_at, "revoked_by": who}
        if not self.storage.create_json(revocation, *REVOKED_DIR, f"{ident}.json"):
            raise RaysysError(f"id: key {ident!r} was already revoked (just now, by another caller)")
        audit.record(self.storage, "keys.revoke", {"key_id": ident, "name": found.name, "role": found.role},
                     actor=who)
        return revoked.public()
