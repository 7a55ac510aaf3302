"""API keys: generation with a checksum, hashing, lookup with a short cache, revocation.

A key is ``nexa_`` + 32 base62 characters (190 bits) + a 6-character base62
checksum of those 32. The checksum lets the gateway (and secret scanners) throw
out typos and junk without touching the database. Only SHA-256 of the whole key
is stored: the key has far more entropy than a password, so a slow hash buys
nothing, and a fast one keeps authentication off the latency budget.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nexa.contracts import ApiKeyCreated, ApiKeyInfo
from nexa.contracts.keys import Role
from nexa.ids import new_id
from nexa_gateway.db import ApiKey, Database, KeyRole, Tenant, utcnow

KEY_PREFIX = "nexa_"
WORKER_TOKEN_PREFIX = "nexaw_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 32
_CHECK_LEN = 6


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECK_LEN)


def generate_api_key() -> str:
    """A fresh, well-formed ``nexa_…`` key."""
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LEN))
    return f"{KEY_PREFIX}{body}{_checksum(body)}"


def generate_worker_token() -> str:
    """A fresh worker credential; a different prefix so it can never pass as a user key."""
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LEN))
    return f"{WORKER_TOKEN_PREFIX}{body}{_checksum(body)}"


def well_formed(key: str, prefix: str = KEY_PREFIX) -> bool:
    """True when ``key`` has the right prefix, length, alphabet and checksum."""
    if not key.startswith(prefix) or len(key) != len(prefix) + _BODY_LEN + _CHECK_LEN:
        return False
    rest = key[len(prefix) :]
    if any(c not in _ALPHABET for c in rest):
        return False
    body, check = rest[:_BODY_LEN], rest[_BODY_LEN:]
    return secrets.compare_digest(_checksum(body), check)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def ensure_tenant(session: Session, name: str) -> Tenant:
    """The tenant called ``name``, created on first use."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(id=new_id("tnt"), name=name)
        session.add(tenant)
        session.flush()
    return tenant


def role_of(session: Session, key_id: str) -> Role:
    """The key's role; keys from before roles existed are their tenant's admins."""
    stored = session.scalar(select(KeyRole.role).where(KeyRole.key_id == key_id))
    return Role(stored) if stored else Role.admin


def set_role(session: Session, key_id: str, role: Role) -> None:
    """Give ``key_id`` exactly ``role``."""
    row = session.get(KeyRole, key_id)
    if row is None:
        session.add(KeyRole(key_id=key_id, role=role.value))
    else:
        row.role = role.value
    session.flush()


def _info(row: ApiKey, role: Role) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=row.id,
        name=row.name,
        prefix=row.prefix,
        tenant_id=row.tenant_id,
        role=role,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def store_api_key(
    session: Session,
    key: str,
    *,
    tenant_id: str,
    name: str = "default",
    expires_at: datetime | None = None,
    role: Role = Role.admin,
) -> ApiKeyInfo:
    """Record ``key`` (by hash) for ``tenant_id`` with ``role``; idempotent for the same key."""
    digest = hash_key(key)
    existing = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if existing is not None:
        return _info(existing, role_of(session, existing.id))
    row = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        name=name,
        prefix=key[: len(KEY_PREFIX) + 6],
        key_hash=digest,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    session.add(KeyRole(key_id=row.id, role=role.value))
    session.flush()
    return _info(row, role)


def create_api_key(
    session: Session,
    tenant_name: str = "default",
    name: str = "default",
    expires_in_days: int | None = None,
    role: Role = Role.admin,
) -> ApiKeyCreated:
    """Create a key for the tenant called ``tenant_name`` (created if new); the secret is returned once."""
    tenant = ensure_tenant(session, tenant_name)
    return create_key_for_tenant(session, tenant.id, name=name, expires_in_days=expires_in_days, role=role)


def create_key_for_tenant(
    session: Session,
    tenant_id: str,
    *,
    name: str = "default",
    expires_in_days: int | None = None,
    role: Role = Role.admin,
) -> ApiKeyCreated:
    key = generate_api_key()
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    info = store_api_key(session, key, tenant_id=tenant_id, name=name, expires_at=expires_at, role=role)
    return ApiKeyCreated(**info.model_dump(), key=key)


def list_keys(session: Session, tenant_id: str) -> list[ApiKeyInfo]:
    rows = session.scalars(
        select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at, ApiKey.id)
    )
    return [_info(r, role_of(session, r.id)) for r in rows]


def revoke_key(session: Session, tenant_id: str, key_id: str) -> ApiKeyInfo | None:
    row = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id))
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return _info(row, role_of(session, row.id))


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, the tenant it belongs to, and what it may do."""

    key_id: str
    tenant_id: str
    role: Role = Role.admin


@dataclass
class _CacheEntry:
    principal: Principal | None
    expires_at: datetime | None
    fetched: float


class KeyResolver:
    """Looks up keys by hash, caching answers briefly so each request does not hit the database.

    Revocation through this process clears the cache at once; another gateway
    replica sees it within ``ttl`` seconds.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._cache: dict[str, _CacheEntry] = {}
        self._lock = threading.Lock()
        self._last_touch: dict[str, float] = {}

    def forget_all(self) -> None:
        with self._lock:
            self._cache.clear()

    def cached(self, key: str) -> tuple[bool, Principal | None]:
        """(True, answer) when the cache can answer without the database, else (False, None)."""
        if not well_formed(key):
            return True, None
        with self._lock:
            entry = self._cache.get(hash_key(key))
        if entry is None or time.monotonic() - entry.fetched > self.ttl:
            return False, None
        return True, self._valid(entry)

    def resolve(self, db: Database, key: str) -> Principal | None:
        """The key's principal, from the cache or the database; None for any key that may not call."""
        hit, principal = self.cached(key)
        if hit:
            return principal
        digest = hash_key(key)
        with db.read() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
            found = None
            expires_at = None
            if row is not None and row.revoked_at is None:
                found = Principal(key_id=row.id, tenant_id=row.tenant_id, role=role_of(session, row.id))
                expires_at = row.expires_at
        entry = _CacheEntry(found, expires_at, time.monotonic())
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = entry
        return self._valid(entry)

    @staticmethod
    def _valid(entry: _CacheEntry) -> Principal | None:
        if entry.principal is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= utcnow():
            return None
        return entry.principal

    def touch_is_due(self, key_id: str) -> bool:
        """Whether ``touch_due`` would say yes, without claiming the slot."""
        with self._lock:
            return time.monotonic() - self._last_touch.get(key_id, 0.0) >= 60

    def touch_due(self, key_id: str) -> bool:
        """True at most once a minute per key: last_used_at is informational, not worth a write per call."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_touch.get(key_id, 0.0) < 60:
                return False
            self._last_touch[key_id] = now
            return True

    @staticmethod
    def touch(db: Database, key_id: str) -> None:
        with db.session() as session:
            session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))
