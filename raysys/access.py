"""API keys: who may call the serving app, with which role; stored hashed, never in clear.

A key reads ``rsk_<id>_<secret>``: the id (8 hex digits) finds the record, the secret is
random (:func:`secrets.token_urlsafe`). Only a salted scrypt hash of the whole key is kept, in
``access/keys.json`` under the storage root (written atomically); the key itself is returned
once by :meth:`KeyStore.create` and never stored, logged or audited. Roles: ``predict``
(``/v1/predict``, ``/v2/models/*``), ``feedback`` (``/v1/feedback``), ``admin`` (everything).
Revoking keeps the record (with ``revoked_at``) so the audit trail can name it.

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
KEYS_FILE = ("access", "keys.json")
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


def parse_keys(document: Any) -> list[ApiKey]:
    """The records of a ``keys.json`` document."""
    return [ApiKey(**entry) for entry in document.get("keys", [])]


def read_keys(storage: Storage) -> list[ApiKey]:
    """Every stored key, revoked ones included (none before the first ``keys create``)."""
    if not storage.exists(*KEYS_FILE):
        return []
    return parse_keys(storage.read_json(*KEYS_FILE))


class KeyStore:
    """``System.keys``: create, list and revoke API keys (each change audited, never the key)."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def create(self, role: str, name: str = "", actor: str | None = None) -> dict[str, Any]:
        """A new key: its record and, this once, the key itself (``key``)."""
        keys, who = read_keys(self.storage), actor or getpass.getuser()
        record, text = new_key(role, name, who, datetime.now(timezone.utc), {k.id for k in keys})
        self._save([*keys, record])
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
        self._save([revoked if k.id == ident else k for k in keys])
        audit.record(self.storage, "keys.revoke", {"key_id": ident, "name": found.name, "role": found.role},
                     actor=who)
        return revoked.public()

    def _save(self, keys: list[ApiKey]) -> None:
        self.storage.write_json({"keys": [asdict(k) for k in keys]}, *KEYS_FILE)
