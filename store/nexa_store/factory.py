"""Open an artifact store from a ``describe()`` dict or from the environment.

Credentials never travel in a ``describe()`` dict: the gateway hands a worker
the dict, and the worker adds ``NEXA_S3_ACCESS_KEY`` / ``NEXA_S3_SECRET_KEY``
from its own environment. Signing is optional: ``NEXA_SIGNING_KEY`` (a 64-hex
Ed25519 seed) signs every commit, ``NEXA_TRUSTED_KEYS`` (comma-separated hex
public keys) checks signatures on read, and ``NEXA_REQUIRE_SIGNATURE=true``
refuses unsigned manifests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nexa import storesettings
from nexa_store.base import ArtifactError, ArtifactStore
from nexa_store.local import LocalArtifactStore
from nexa_store.signing import SigningKey


def parse_bool(value: str | bool | None, *, name: str) -> bool:
    """``true/false/1/0/yes/no/on/off`` (any case) as a bool; ``ArtifactError`` naming ``name`` otherwise."""
    try:
        return storesettings.parse_bool(value, name=name)
    except ValueError as exc:
        raise ArtifactError(str(exc)) from exc


def default_local_root(env: Mapping[str, str]) -> Path:
    """``$NEXA_ARTIFACT_ROOT``, else ``$NEXA_HOME/artifacts``, else ``~/.nexa/artifacts``."""
    return storesettings.local_artifact_root(env)


def _signing_options(env: Mapping[str, str]) -> dict[str, Any]:
    seed = env.get("NEXA_SIGNING_KEY", "").strip()
    trusted = [k.strip() for k in env.get("NEXA_TRUSTED_KEYS", "").split(",") if k.strip()]
    signing_key = SigningKey.from_hex(seed) if seed else None
    # A worker that signs trusts its own key, so its reads check what it wrote.
    if signing_key is not None and trusted and signing_key.public_hex not in trusted:
        trusted.append(signing_key.public_hex)
    return {
        "signing_key": signing_key,
        "trusted_keys": trusted,
        "require_signature": parse_bool(env.get("NEXA_REQUIRE_SIGNATURE"), name="NEXA_REQUIRE_SIGNATURE"),
    }


def store_from_config(cfg: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ArtifactStore:
    """The store a ``describe()`` dict names, with S3 credentials and signing options from ``env``."""
    env = os.environ if env is None else env
    kind = cfg.get("kind")
    if kind == "local":
        if not cfg.get("root"):
            raise ArtifactError("local artifact store config needs 'root'")
        return LocalArtifactStore(Path(str(cfg["root"])), **_signing_options(env))
    if kind == "s3":
        missing = [k for k in ("endpoint", "bucket") if not cfg.get(k)]
        if missing:
            raise ArtifactError(f"S3 artifact store config needs {', '.join(missing)}")
        access_key = env.get("NEXA_S3_ACCESS_KEY", "")
        secret_key = env.get("NEXA_S3_SECRET_KEY", "")
        if not access_key or not secret_key:
            raise ArtifactError(
                "the artifact store is S3: set NEXA_S3_ACCESS_KEY and NEXA_S3_SECRET_KEY in this process's environment"
            )
        from nexa_store.s3 import S3ArtifactStore

        return S3ArtifactStore(
            endpoint=str(cfg["endpoint"]),
            bucket=str(cfg["bucket"]),
            access_key=access_key,
            secret_key=secret_key,
            secure=parse_bool(cfg.get("secure", False), name="secure"),
            prefix=str(cfg.get("prefix") or ""),
            region=cfg.get("region") or None,
            **_signing_options(env),
        )
    raise ArtifactError(f"unknown artifact store kind {kind!r} (expected 'local' or 's3')")


def store_from_env(env: Mapping[str, str] | None = None) -> ArtifactStore:
    """An S3 store when ``NEXA_S3_ENDPOINT`` is set, else a local one at ``default_local_root``."""
    env = os.environ if env is None else env
    try:
        location = storesettings.S3Location.from_env(env)
    except ValueError as exc:
        raise ArtifactError(str(exc)) from exc
    if location is not None:
        if not env.get("NEXA_S3_BUCKET"):
            raise ArtifactError("NEXA_S3_ENDPOINT is set but NEXA_S3_BUCKET is not")
        cfg: dict[str, Any] = {
            "kind": "s3",
            "endpoint": location.endpoint,
            "bucket": location.bucket,
            "prefix": location.prefix,
            "secure": location.secure,
            "region": location.region,
        }
        return store_from_config(cfg, env)
    return store_from_config({"kind": "local", "root": str(default_local_root(env))}, env)
