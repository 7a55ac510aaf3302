"""Where the artifact store is: the one reader of ``NEXA_S3_*``, ``NEXA_ARTIFACT_ROOT`` and the S3 client.

The engines (``store_from_env``, ``run_one``'s run records), the operator (reading
those records back) and the S3 store itself all find the store the same way, so
one module reads the variables and makes the MinIO client. ``minio`` is imported
only when a client is made: the SDK does not depend on it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minio import Minio

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
DEFAULT_BUCKET = "nexa-artifacts"


def parse_bool(value: str | bool | None, *, name: str) -> bool:
    """``true/false/1/0/yes/no/on/off`` (any case) as a bool; ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool):
        return value
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, not {value!r}")


def split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """``host:port`` and TLS from ``http(s)://host:port`` or ``host:port`` (the scheme, when given, decides)."""
    for scheme, is_secure in (("https://", True), ("http://", False)):
        if endpoint.startswith(scheme):
            return endpoint[len(scheme) :].rstrip("/"), is_secure
    return endpoint.rstrip("/"), secure


@dataclass(frozen=True)
class S3Location:
    """An S3 (or MinIO) bucket and prefix, with the credentials to reach it."""

    endpoint: str
    bucket: str = DEFAULT_BUCKET
    prefix: str = ""
    secure: bool = False
    region: str | None = None
    access_key: str = ""
    secret_key: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Location | None:
        """The store ``NEXA_S3_*`` names, or None when ``NEXA_S3_ENDPOINT`` is unset (a local store)."""
        env = os.environ if env is None else env
        if not env.get("NEXA_S3_ENDPOINT"):
            return None
        endpoint, secure = split_endpoint(
            env["NEXA_S3_ENDPOINT"], parse_bool(env.get("NEXA_S3_SECURE"), name="NEXA_S3_SECURE")
        )
        return cls(
            endpoint=endpoint,
            bucket=env.get("NEXA_S3_BUCKET") or DEFAULT_BUCKET,
            prefix=env.get("NEXA_S3_PREFIX", "").strip("/"),
            secure=secure,
            region=env.get("NEXA_S3_REGION") or None,
            access_key=env.get("NEXA_S3_ACCESS_KEY", ""),
            secret_key=env.get("NEXA_S3_SECRET_KEY", ""),
        )

    def object_name(self, key: str) -> str:
        """``key`` under this location's prefix."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def client(self) -> Minio:
        """A ``minio.Minio`` client for this location (``ValueError`` for a malformed endpoint)."""
        from minio import Minio

        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=self.secure,
            region=self.region,
        )


def local_artifact_root(env: Mapping[str, str] | None = None) -> Path:
    """``$NEXA_ARTIFACT_ROOT``, else ``$NEXA_HOME/artifacts``, else ``~/.nexa/artifacts`` (of ``env``)."""
    env = os.environ if env is None else env
    if env.get("NEXA_ARTIFACT_ROOT"):
        return Path(env["NEXA_ARTIFACT_ROOT"]).expanduser()
    return Path(env.get("NEXA_HOME") or "~/.nexa").expanduser() / "artifacts"
