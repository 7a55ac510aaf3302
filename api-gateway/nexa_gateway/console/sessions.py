"""Console sign-ins: a random session id in the browser's cookie, the API key on the server.

The row is keyed by the SHA-256 of the session id, and the API key is stored encrypted (AES-GCM) with a
key derived from the session id. The session id exists only in the cookie, so a copy of the database
gives neither a session a browser could present nor the API keys behind them; and no server-side secret
has to be configured or shared between gateway replicas for it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete

from nexa_gateway.db import ConsoleSession, Database, utcnow

COOKIE = "nexa_session"


@dataclass(frozen=True)
class SignedIn:
    """The browser's sign-in: whose key it holds and the token its forms must carry."""

    api_key: str
    tenant_id: str
    csrf_token: str


def _id_hash(session_id: str) -> str:
    return hashlib.sha256(b"nexa-console-session:" + session_id.encode()).hexdigest()


def _cipher(session_id: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"nexa-console-api-key").derive(
        session_id.encode()
    )
    return AESGCM(key)


def _seal(session_id: str, api_key: str) -> str:
    nonce = secrets.token_bytes(12)
    sealed = _cipher(session_id).encrypt(nonce, api_key.encode(), _id_hash(session_id).encode())
    return base64.b64encode(nonce + sealed).decode()


def _open(session_id: str, sealed: str) -> str | None:
    raw = base64.b64decode(sealed)
    try:
        return _cipher(session_id).decrypt(raw[:12], raw[12:], _id_hash(session_id).encode()).decode()
    except InvalidTag:
        return None


def create(db: Database, api_key: str, tenant_id: str, hours: float) -> str:
    """A new session for ``api_key``; returns the session id for the cookie (a fresh one every time)."""
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    with db.session() as session:
        session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
        session.add(
            ConsoleSession(
                id_hash=_id_hash(session_id),
                api_key_encrypted=_seal(session_id, api_key),
                tenant_id=tenant_id,
                csrf_token=secrets.token_urlsafe(32),
                created_at=now,
                expires_at=now + timedelta(hours=hours),
            )
        )
    return session_id


def lookup(db: Database, session_id: str | None) -> SignedIn | None:
    """The sign-in behind a cookie value, or None (unknown, expired or not decryptable)."""
    if not session_id or len(session_id) > 128:
        return None
    with db.read() as session:
        row = session.get(ConsoleSession, _id_hash(session_id))
        if row is None or row.expires_at <= utcnow():
            return None
        api_key = _open(session_id, row.api_key_encrypted)
        if api_key is None:
            return None
        return SignedIn(api_key=api_key, tenant_id=row.tenant_id, csrf_token=row.csrf_token)


def end(db: Database, session_id: str | None) -> None:
    """Forget a sign-in (sign-out, or a key the API no longer accepts)."""
    if not session_id or len(session_id) > 128:
        return
    with db.session() as session:
        session.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == _id_hash(session_id)))
