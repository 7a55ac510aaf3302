"""Endpoint keys that are derived, never stored.

A deployment's endpoint key (``nexa_ep_…``) is an HMAC of its deploy job's id
under a secret only the gateway holds. The worker that starts the server is
handed the key's SHA-256 with its claim (the serving process checks callers
against it) and never sees the key; the job's stored result carries no key. The
gateway computes the key again when it shows the job to its tenant, and when it
hands a job calling that deployment (a ``dp_…`` teacher) its capability. A copy
of the database, a log or a worker's disk therefore holds no usable endpoint key.

Every replica of a gateway must share the secret: ``NEXA_ENDPOINT_KEY_SECRET``,
or ``$NEXA_HOME/endpoint-keys.secret`` (made on first start, mode 0600).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from typing import Any

from nexa.contracts import Job as JobModel
from nexa.contracts import JobType
from nexa_gateway.settings import Settings, nexa_home

SECRET_FILE = "endpoint-keys.secret"
ENDPOINT_KEY_PREFIX = "nexa_ep_"  # the serving process's own prefix (nexa_engines.serve.auth)
_CONTEXT = b"nexa endpoint key\0"


def load_or_create_secret(settings: Settings) -> bytes:
    """The secret the settings give, else the one kept in ``$NEXA_HOME`` (made on first start)."""
    if settings.endpoint_key_secret:
        return settings.endpoint_key_secret.encode()
    path = nexa_home() / SECRET_FILE
    if path.is_file():
        return path.read_text().strip().encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another gateway on this home made it first: use theirs
        return path.read_text().strip().encode()
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value.encode()


def endpoint_key(secret: bytes, job_id: str) -> str:
    """The endpoint key of the deployment that deploy job ``job_id`` starts (the same on every attempt)."""
    digest = hmac.new(secret, _CONTEXT + job_id.encode(), hashlib.sha256).digest()
    return ENDPOINT_KEY_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def endpoint_key_sha256(secret: bytes, job_id: str) -> str:
    """What the serving process is given: the key's SHA-256, hex."""
    return hashlib.sha256(endpoint_key(secret, job_id).encode()).hexdigest()


def reveal(secret: bytes | None, job: JobModel) -> JobModel:
    """``job`` as its tenant sees it: a deploy result gains its endpoint key, computed here."""
    if secret is None or job.job_type is not JobType.deploy or not isinstance(job.result, dict):
        return job
    result: dict[str, Any] = job.result
    if result.get("api_key") or not result.get("deployment_id"):
        return job  # a key the worker made itself (a deployment from before derived keys)
    return job.model_copy(update={"result": {**result, "api_key": endpoint_key(secret, job.job_id)}})
