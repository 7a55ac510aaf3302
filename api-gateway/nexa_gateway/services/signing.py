"""The platform's manifest-signing key: held by the gateway only, never by workers or pods.

A worker commits its outputs with their hashes (and, on the mesh, its own
signature); when the gateway accepts the attempt it countersigns each manifest
with this key. Inputs named by id and downloads must then carry a valid platform
signature, so data rewritten in the store together with its manifest hashes is
refused. Artifacts created before signing was turned on stay readable, unsigned
(``nexa store verify`` lists them).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session

from nexa_gateway.db import PlatformMeta
from nexa_gateway.settings import Settings, nexa_home
from nexa_store.signing import PlatformTrust, SigningKey

KEY_FILE = "platform-signing.key"
SINCE = "signing_since"
KEYS = "signing_keys"


def signing_enabled(settings: Settings) -> bool:
    """On unless turned off: in standalone, and in cluster mode once engine pods use the gateway's store
    (attempt tokens), where the gateway accepts their outputs as it does workers'."""
    if settings.manifest_signing is not None:
        return settings.manifest_signing
    return settings.backend == "sql" or bool(settings.attempt_token_secret)


def load_or_create_key(settings: Settings) -> SigningKey:
    """The key the settings give, else the one kept in ``$NEXA_HOME`` (made on first start, mode 0600)."""
    if settings.platform_signing_key:
        return SigningKey.from_hex(settings.platform_signing_key)
    path = nexa_home() / KEY_FILE
    if path.is_file():
        return SigningKey.from_hex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another gateway on this home made it first: use theirs
        return SigningKey.from_hex(path.read_text().strip())
    with os.fdopen(fd, "w") as out:
        out.write(key.private_hex() + "\n")
    return key


def record(session: Session, key: SigningKey) -> PlatformTrust:
    """Note when signing began and that ``key`` signs; every key that ever signed stays trusted."""
    since_row = session.get(PlatformMeta, SINCE)
    if since_row is None:
        since_row = PlatformMeta(key=SINCE, value=datetime.now(UTC).isoformat())
        session.add(since_row)
    keys_row = session.get(PlatformMeta, KEYS)
    keys: list[str] = json.loads(keys_row.value) if keys_row is not None else []
    if key.public_hex not in keys:
        keys.append(key.public_hex)
        if keys_row is None:
            session.add(PlatformMeta(key=KEYS, value=json.dumps(keys)))
        else:
            keys_row.value = json.dumps(keys)
    session.flush()
    return PlatformTrust(tuple(keys), datetime.fromisoformat(since_row.value))


def read_trust(session: Session) -> PlatformTrust:
    """What the database says is trusted (signing off: nothing recorded)."""
    since_row = session.get(PlatformMeta, SINCE)
    keys_row = session.get(PlatformMeta, KEYS)
    if since_row is None or keys_row is None:
        return PlatformTrust()
    return PlatformTrust(tuple(json.loads(keys_row.value)), datetime.fromisoformat(since_row.value))


def key_path() -> Path:
    return nexa_home() / KEY_FILE
