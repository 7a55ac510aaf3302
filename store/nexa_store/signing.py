"""Optional Ed25519 signatures on artifact manifests.

The signature covers the canonical JSON of the manifest without its
``signature`` and ``signer`` fields (keys sorted, no whitespace, UTF-8). The
manifest lists every file's sha256, so a valid signature vouches for the bytes
too. Signing needs the ``cryptography`` package (in the ``engines`` and
``gateway`` extras); without it, asking for a signature raises
``SigningUnavailable`` and unsigned artifacts work as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from nexa.contracts import ArtifactManifest
from nexa_store.base import ArtifactError, ArtifactStore, IntegrityError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class SigningUnavailable(ArtifactError):
    """Signing or verification was asked for but ``cryptography`` is not installed."""


class SignatureError(IntegrityError):
    """A manifest's signature is missing, invalid, or made by an untrusted key."""


def signing_available() -> bool:
    """True when the ``cryptography`` package can be imported."""
    try:
        import cryptography.hazmat.primitives.asymmetric.ed25519  # noqa: F401
    except ImportError:
        return False
    return True


def _require_crypto() -> None:
    if not signing_available():
        raise SigningUnavailable(
            "manifest signing needs the 'cryptography' package: pip install 'nexa-forge[engines]'"
        )


def canonical_bytes(manifest: ArtifactManifest) -> bytes:
    """The bytes a signature covers: the manifest without signature fields, as canonical JSON."""
    body = manifest.model_dump(mode="json", exclude={"signature", "signer"})
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class SigningKey:
    """An Ed25519 private key that signs manifests."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key."""
        _require_crypto()
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_hex(cls, seed_hex: str) -> SigningKey:
        """The key whose 32-byte private seed is ``seed_hex``."""
        try:
            seed = bytes.fromhex(seed_hex.strip())
        except ValueError as exc:
            raise ArtifactError("signing key must be 64 hex characters (a 32-byte Ed25519 seed)") from exc
        if len(seed) != 32:
            raise ArtifactError("signing key must be 64 hex characters (a 32-byte Ed25519 seed)")
        _require_crypto()
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def private_hex(self) -> str:
        """The 32-byte private seed as hex (keep it secret)."""
        from cryptography.hazmat.primitives import serialization

        raw = self._key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return raw.hex()

    @property
    def public_hex(self) -> str:
        """The public key as hex: what verifiers list as trusted."""
        from cryptography.hazmat.primitives import serialization

        return (
            self._key.public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            .hex()
        )

    def sign_bytes(self, data: bytes) -> bytes:
        """A raw Ed25519 signature over ``data``."""
        return self._key.sign(data)

    def sign(self, manifest: ArtifactManifest) -> ArtifactManifest:
        """A copy of ``manifest`` with ``signature`` and ``signer`` filled in."""
        signature = self._key.sign(canonical_bytes(manifest)).hex()
        return manifest.model_copy(update={"signature": signature, "signer": self.public_hex})


def verify_signature(manifest: ArtifactManifest, trusted_public_keys_hex: Iterable[str]) -> None:
    """Return if the manifest is signed by one of the trusted keys over its current content, else raise."""
    if manifest.signature is None or manifest.signer is None:
        raise SignatureError(f"{manifest.artifact_id}: manifest is not signed")
    trusted = {k.strip().lower() for k in trusted_public_keys_hex}
    if manifest.signer.lower() not in trusted:
        raise SignatureError(f"{manifest.artifact_id}: signed by an untrusted key {manifest.signer[:16]}…")
    _require_crypto()
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(manifest.signer))
        public_key.verify(bytes.fromhex(manifest.signature), canonical_bytes(manifest))
    except (ValueError, InvalidSignature) as exc:
        raise SignatureError(
            f"{manifest.artifact_id}: manifest signature does not match its content"
        ) from exc


@dataclass
class SignaturePolicy:
    """How a store signs at commit and what it checks at read."""

    signing_key: SigningKey | None = None
    trusted_keys: list[str] = field(default_factory=list)
    require_signature: bool = False

    def __post_init__(self) -> None:
        if self.require_signature and not self.trusted_keys:
            raise ArtifactError("require_signature needs at least one trusted public key")
        if self.trusted_keys and not signing_available():
            raise SigningUnavailable(
                "trusted signing keys were given but the 'cryptography' package is not installed: "
                "pip install 'nexa-forge[engines]'"
            )

    def apply(self, manifest: ArtifactManifest) -> ArtifactManifest:
        """The manifest as the store writes it: signed when the store has a key."""
        return self.signing_key.sign(manifest) if self.signing_key else manifest

    def check(self, manifest: ArtifactManifest) -> None:
        """Verify the signature when present (and trusted keys are set); refuse unsigned ones if required."""
        if not self.trusted_keys:
            return
        if manifest.signature is None and not self.require_signature:
            return
        verify_signature(manifest, self.trusted_keys)


@dataclass(frozen=True)
class PlatformTrust:
    """Which manifests count as accepted by the platform: signed by one of its keys.

    An unsigned artifact is *legacy* (still readable) only on the platform's word,
    never on its own manifest's date, which whoever wrote it chose: the gateway
    judges by when its registry recorded the artifact (before ``since``, when
    signing began), and a worker by the ids its claim lists in ``legacy_ids``.
    No keys means signing is off and nothing is checked.
    """

    keys: tuple[str, ...] = ()
    since: datetime | None = None
    legacy_ids: frozenset[str] = frozenset()

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def status(self, manifest: ArtifactManifest, *, registered_at: datetime | None = None) -> str:
        """``signed``, ``legacy`` (unsigned, from before signing), ``unsigned`` or ``bad`` (wrong signature)."""
        if not self.keys:
            return "signed"
        if (
            manifest.signature is not None
            and manifest.signer is not None
            and manifest.signer.lower() in self.keys
        ):
            try:
                verify_signature(manifest, self.keys)
            except SignatureError:
                return "bad"
            return "signed"
        if manifest.artifact_id in self.legacy_ids:
            return "legacy"
        if registered_at is not None and self.since is not None and registered_at < self.since:
            return "legacy"
        return "unsigned"

    def check(self, manifest: ArtifactManifest, *, registered_at: datetime | None = None) -> None:
        """Raise ``SignatureError`` unless the platform accepted this artifact (or registered it before signing)."""
        state = self.status(manifest, registered_at=registered_at)
        if state == "bad":
            raise SignatureError(
                f"{manifest.artifact_id}: the platform signature does not match the manifest"
            )
        if state == "unsigned":
            raise SignatureError(
                f"{manifest.artifact_id}: not signed by the platform (an artifact the gateway never accepted)"
            )


def countersign(
    store: ArtifactStore, artifact_id: str, key: SigningKey, *, verified: ArtifactManifest | None = None
) -> ArtifactManifest:
    """Sign the manifest with the platform key and write it back.

    ``verified`` is a manifest whose files the caller just checked; without it every
    file is verified here first.
    """
    manifest = verified if verified is not None else store.read_manifest(artifact_id, verify=True)
    stripped = manifest.model_copy(update={"signature": None, "signer": None})
    signed = key.sign(stripped)
    if signed.signature != manifest.signature or signed.signer != manifest.signer:
        store.replace_manifest(signed)
    return signed
