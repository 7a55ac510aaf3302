"""A node's signed reports: DSSE envelopes over a canonical statement of what the node reports.

A worker holds an Ed25519 key of its own (``NodeKey``, kept in its state directory, mode 0600) and
registers its public half. Every final report it sends (``complete``, ``fail``) and every batch of
log lines (``logs``) then carries a DSSE
envelope (https://github.com/secure-systems-lab/dsse): the signature covers
``PAE(payloadType, payload)``. The payload is the canonical JSON of the report together with what it
is about: the kind of report, the job, the attempt and the reporting worker. So a valid envelope
cannot be moved to another job, attempt or worker, nor to another result. The gateway rebuilds the
payload from the request it received and checks that the envelope signs exactly that
(``verify_report``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from nexa.contracts import ArtifactManifest
from nexa.contracts.workers import DsseSignature, SignedEnvelope
from nexa_store.base import ArtifactError
from nexa_store.signing import SigningKey, _require_crypto, canonical_bytes

PAYLOAD_TYPE = "application/vnd.nexa.worker-report.v1+json"
KEY_FILE = "node_ed25519.key"
ReportKind = Literal["complete", "fail", "logs", "register"]
# How old a registration's proof of key possession may be: long enough for a worker that retries its
# registration while the gateway is down; the proof only shows that the node holds the private key.
KEY_PROOF_MAX_AGE = timedelta(days=1)


class KeyProof(BaseModel):
    """What a node signs when it registers: that it holds the private half of ``public_key``."""

    public_key: str
    signed_at: datetime


def manifest_digest(manifest: ArtifactManifest) -> str:
    """SHA-256 of a manifest's canonical JSON without its signature fields: what a node's signed
    result names for each artifact it produced."""
    return hashlib.sha256(canonical_bytes(manifest)).hexdigest()


class EnvelopeError(ArtifactError):
    """A report's envelope is missing, malformed, or does not sign this report with this node's key."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _same_report(
    payload: bytes, kind: ReportKind, job_id: str, attempt: int, worker_id: str, report: BaseModel
) -> bool:
    """Whether the signed statement is about this job, attempt and node, and its report reads as
    ``report`` does. Compared as models, not bytes: a node on an older version, whose report lacks a
    field the gateway added since (with a default), still signs the same report."""
    try:
        statement = json.loads(payload)
    except ValueError:
        return False
    if not isinstance(statement, dict) or (
        statement.get("kind"),
        statement.get("job_id"),
        statement.get("attempt"),
        statement.get("worker_id"),
    ) != (kind, job_id, attempt, worker_id):
        return False
    try:
        signed = type(report).model_validate(statement.get("report"))
    except ValidationError:
        return False
    return signed.model_copy(update={"envelope": None}) == report.model_copy(update={"envelope": None})


def report_payload(kind: ReportKind, job_id: str, attempt: int, worker_id: str, report: BaseModel) -> bytes:
    """The canonical bytes a node signs for ``report`` (the report without its envelope)."""
    statement: dict[str, Any] = {
        "kind": kind,
        "job_id": job_id,
        "attempt": attempt,
        "worker_id": worker_id,
        "report": report.model_dump(mode="json", exclude={"envelope"}),
    }
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class NodeKey:
    """A node's Ed25519 identity: made at its first start, then read from its state directory."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key

    @property
    def public_hex(self) -> str:
        return self.key.public_hex

    @classmethod
    def load_or_create(cls, state_dir: Path) -> NodeKey:
        """The key in ``state_dir`` (made there, readable by its owner only, if there is none)."""
        path = state_dir / KEY_FILE
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = state_dir.stat()
        if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o022:
            # Someone else could plant a key here (and so know this node's secret).
            raise EnvelopeError(f"{state_dir} must be this user's and writable by no one else")
        if not path.exists():
            key = SigningKey.generate()
            # Created 0600 under a random name (the secret is never on disk with wider permissions),
            # then linked into place: of two workers starting at once, one key wins and both use it.
            fd, staged = tempfile.mkstemp(prefix=f".{KEY_FILE}.", dir=state_dir)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(key.private_hex() + "\n")
            try:
                os.link(staged, path)
            except FileExistsError:
                pass
            finally:
                os.unlink(staged)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, encoding="ascii") as fh:
            found = os.fstat(fh.fileno())
            if found.st_uid != os.geteuid():
                raise EnvelopeError(f"{path} belongs to another user")
            mode = stat.S_IMODE(found.st_mode)
            if mode & 0o077:
                raise EnvelopeError(f"{path} is readable by others (mode {mode:o}): chmod 600 it")
            return cls(SigningKey.from_hex(fh.read().strip()))

    def key_proof(self) -> SignedEnvelope:
        """The proof a registration carries: this key signing its own public half, with the time."""
        return self.sign(
            "register", "", 0, "", KeyProof(public_key=self.public_hex, signed_at=datetime.now(UTC))
        )

    def sign(
        self, kind: ReportKind, job_id: str, attempt: int, worker_id: str, report: BaseModel
    ) -> SignedEnvelope:
        payload = report_payload(kind, job_id, attempt, worker_id, report)
        signature = self.key.sign_bytes(pae(PAYLOAD_TYPE, payload))
        return SignedEnvelope(
            payload=base64.b64encode(payload).decode("ascii"),
            payloadType=PAYLOAD_TYPE,
            signatures=[
                DsseSignature(keyid=self.public_hex, sig=base64.b64encode(signature).decode("ascii"))
            ],
        )


def verify_key_proof(envelope: SignedEnvelope | None, public_key_hex: str, now: datetime) -> None:
    """Return if ``envelope`` shows that the registering node holds ``public_key_hex``'s private key
    (a fresh signature by it over it); else raise. Without this anyone could register another node's
    public key and act, and be judged, as that node."""
    if envelope is None:
        raise EnvelopeError(
            "a node that registers a public key must prove it holds the private key (key_proof)"
        )
    try:
        statement = json.loads(base64.b64decode(envelope.payload, validate=True))
        proof = KeyProof.model_validate(statement.get("report") if isinstance(statement, dict) else None)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError("the key proof's payload is not a signed key statement") from exc
    if proof.public_key != public_key_hex:
        raise EnvelopeError("the key proof is for another key")
    signed_at = proof.signed_at if proof.signed_at.tzinfo else proof.signed_at.replace(tzinfo=UTC)
    if abs(now - signed_at) > KEY_PROOF_MAX_AGE:
        raise EnvelopeError("the key proof is stale or from the future: sign a new one")
    verify_report(envelope, public_key_hex, "register", "", 0, "", proof)


def verify_report(
    envelope: SignedEnvelope | None,
    public_key_hex: str,
    kind: ReportKind,
    job_id: str,
    attempt: int,
    worker_id: str,
    report: BaseModel,
) -> None:
    """Return if ``envelope`` is ``public_key_hex``'s signature over exactly this report; else raise."""
    if envelope is None:
        raise EnvelopeError("the report is not signed, but this node registered a key: every report must be")
    if envelope.payloadType != PAYLOAD_TYPE:
        raise EnvelopeError(f"the envelope's payloadType is {envelope.payloadType!r}, not {PAYLOAD_TYPE!r}")
    try:
        payload = base64.b64decode(envelope.payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError("the envelope's payload is not base64") from exc
    if not _same_report(payload, kind, job_id, attempt, worker_id, report):
        # Signed for another job, attempt, node or result: a replay or a tampered report.
        raise EnvelopeError("the envelope signs another report (another job, attempt, node or result)")
    _require_crypto()
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
    for signature in envelope.signatures:
        try:
            key.verify(base64.b64decode(signature.sig, validate=True), pae(envelope.payloadType, payload))
            return
        except (InvalidSignature, binascii.Error, ValueError):
            continue
    raise EnvelopeError("no signature on the envelope is this node's")
