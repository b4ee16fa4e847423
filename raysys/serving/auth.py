"""The request guard of a replica: ``Authorization: Bearer <key>`` against the stored keys.

Each replica holds a :class:`Guard` (``server.guard``) built from the replica settings
(``serve.auth``, ``serve.auth_refresh_s``). It reads the stored keys
(:func:`raysys.access.read_keys`) when its copy is older than ``refresh_s`` (so keys created or
revoked are seen within that time, without a restart), and remembers the keys it verified by a
fast digest, so the slow hash runs once per key and replica; a key whose id is unknown is
refused without hashing. A refusal is a
:class:`~raysys.serving.payloads.RequestError`: 401 for no key, a malformed header, an unknown or
revoked key; 403 for a valid key of the wrong role; ``field`` is ``authorization``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from raysys.access import MAX_KEY_CHARS, allows, auth_active, key_id, read_keys, verify
from raysys.serving.payloads import RequestError
from raysys.storage import Storage

FIELD = "authorization"
MAX_CACHED = 4096  # verified (or refused) key digests remembered per replica
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    """Who made an authorized request: the key's id, name and role."""

    key_id: str
    name: str
    role: str


class AuthError(RequestError):
    """401/403 with the ``WWW-Authenticate`` challenge of the bearer scheme."""

    def __init__(self, message: str, status: int = 401):
        super().__init__(message, status=status, field=FIELD)
        self.headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}


def bearer_token(header: str | None) -> str:
    """The key in an ``Authorization`` header value; a missing or malformed one is a 401."""
    if header is None:
        raise AuthError("authorization: an API key is required (Authorization: Bearer <key>)")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("authorization: use the Bearer scheme (Authorization: Bearer <key>)")
    return token.strip()


class Guard:
    """Decides per request whether its key may use a role (None: auth is off)."""

    def __init__(self, storage: Storage, mode: str = "auto", refresh_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        self.storage, self.mode, self.refresh_s, self.clock = storage, mode, refresh_s, clock
        self._lock = asyncio.Lock()
        self._by_id: dict[str, Any] = {}
        self._active = mode != "off"  # until the keys are read: refuse (fail closed)
        self._verified: dict[bytes, str | None] = {}  # sha256(key) → its id if it matched its hash, else None
        self._loaded_at = -float("inf")
        if mode != "off":
            self._load()

    @classmethod
    def from_settings(cls, storage: Storage, settings: dict[str, Any]) -> Guard:
        """The guard of a replica (``settings["auth"]``: mode and refresh_s)."""
        return cls(storage, settings["mode"], settings["refresh_s"])

    @property
    def active(self) -> bool:
        """Whether requests currently need a key (as of the last read of the keys)."""
        return self._active

    async def check(self, request: Request, role: str) -> Principal | None:
        """The request's principal if its key may use ``role``; None when auth is off; else raise."""
        if self.mode == "off":
            return None
        if self.clock() - self._loaded_at >= self.refresh_s:
            await self._refresh()
        if not self._active:
            return None
        token = bearer_token(request.headers.get("authorization"))
        record = self._by_id.get(await self._verified_id(token))
        if record is None or not record.active:
            raise AuthError("authorization: invalid or revoked API key")
        if not allows(record.role, role):
            raise AuthError(f"authorization: this key's role ({record.role}) may not use this route "
                            f"(it needs {role} or admin)", status=403)
        return Principal(record.id, record.name, record.role)

    async def _verified_id(self, token: str) -> str | None:
        """The id of the stored key ``token`` is, else None; the slow hash runs once per key (cached)."""
        if len(token) > MAX_KEY_CHARS:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        if digest in self._verified:
            return self._verified[digest]
        ident = key_id(token)
        record = self._by_id.get(ident) if ident is not None else None
        if record is None:  # not cached: a key created since the last read is not refused for good
            return None
        matched = await asyncio.to_thread(verify, record, token)  # off the event loop
        if len(self._verified) >= MAX_CACHED:
            self._verified.clear()
        self._verified[digest] = ident if matched else None
        return self._verified[digest]

    async def _refresh(self) -> None:
        async with self._lock:
            if self.clock() - self._loaded_at >= self.refresh_s:  # another request may have just read
                await asyncio.to_thread(self._load)

    def _load(self) -> None:
        """Read the keys; an unreadable file keeps the last keys read (and is logged)."""
        try:
            keys = read_keys(self.storage)
        except Exception as error:  # noqa: BLE001 - serve on with the keys last read
            logger.warning("the stored API keys are unreadable, keeping the keys last read: %s", type(error).__name__)
        else:
            self._by_id = {k.id: k for k in keys}
            self._active = auth_active(self.mode, keys)
        self._loaded_at = self.clock()


SCHEME = "bearer"
RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, a malformed Authorization header, or an unknown or revoked key"},
    403: {"description": "The API key's role may not use this route"}}


def security_scheme() -> dict[str, Any]:
    """The OpenAPI security scheme every guarded route names (``components.securitySchemes``)."""
    return {SCHEME: {"type": "http", "scheme": "bearer", "description": (
        "An API key from `raysys keys create --role predict|feedback|admin`, required once a key exists "
        "(serve.auth: auto) or always (on).")}}


def documented(role: str) -> dict[str, Any]:
    """OpenAPI fields of a route guarded for ``role`` (its security requirement, its role)."""
    return {"security": [{SCHEME: []}], "x-raysys-role": role}
