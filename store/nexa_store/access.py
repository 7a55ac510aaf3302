"""The tenant boundary: may this job read what this reference names?

One resolver decides for every reference a job carries (``nexa.contracts.refs``),
in the gateway at submit and again in the worker or pod at run. The two differ
only in who says which tenant owns an artifact: the gateway asks its registry
table, a worker asks the artifact's manifest (it trusts nothing in the claim but
the tenant it runs for). Rules, the same everywhere:

* A stored artifact (``ds_…``, ``ckpt_…``, ``dp_…``, ``internal://<id>``) is
  readable only by the tenant that owns it. Another tenant's artifact reads as
  *not found*, never as *forbidden*, so ids cannot be probed.
* A local path (absolute, ``file://``, a directory, through symlinks) is readable
  only under a root granted to the tenant on this server, judged on the real path;
  the artifact store and Nexa's own state directories are never readable as local
  paths, and a directory's files are re-checked one by one when it is scanned.
* ``s3://bucket/…`` is readable only from a bucket granted to the tenant; the
  platform's credentials are not the tenant's, and the store's own artifact areas
  are never readable by key.
* ``hf://`` and Hugging Face ids (``owner/name``) are public data.
* A model name in the platform's catalog (``nexa.contracts.catalog``) is the
  platform's choice, readable by every tenant; a bare name it lacks is not found.
* A relative path is never accepted: it would resolve against a worker's cwd.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nexa.config import nexa_home
from nexa.contracts.catalog import CatalogEntry, not_in_catalog_message
from nexa.contracts.refs import JobReference, ParsedRef, RefKind, parse_reference
from nexa.ids import id_prefix
from nexa_store.base import ArtifactError, ArtifactStore
from nexa_store.signing import PlatformTrust, SignatureError

# Which artifact id prefixes each reference kind accepts.
_ARTIFACT_PREFIXES: dict[RefKind, tuple[str, ...]] = {
    "dataset": ("ds",),
    "checkpoint": ("ckpt",),
    "model": ("ckpt",),
    "teacher": ("ckpt", "dp"),
    "url": (),
}
_PREFIX_KIND = {"ds": "dataset", "ckpt": "checkpoint", "dp": "deployment", "ev": "eval", "log": "log"}

OwnerLookup = Callable[[str], "str | None"]


class AccessDenied(Exception):
    """A reference this job may not use; ``code`` is the API error type, ``message`` is for the user."""

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Access:
    """What one job may read: its tenant's artifacts, and the local roots and buckets granted to it here.

    ``tenant_id`` None is the platform itself (a serving process loading a
    checkpoint the deploy job already resolved): ownership is then not checked.
    """

    tenant_id: str | None
    local_roots: tuple[Path, ...] = ()
    s3_buckets: tuple[str, ...] = ()
    protected: tuple[Path, ...] = ()
    owner_of: OwnerLookup | None = field(default=None, compare=False)
    # Where manifests are the authority (workers, pods): only artifacts the platform signed.
    trust: PlatformTrust | None = None
    # The job itself: its own outputs of an earlier attempt (resume checkpoints) are never
    # accepted by the gateway, so they are usable unsigned by this job only.
    job_id: str | None = None
    # The platform's model catalog: names every tenant may use (nexa.contracts.catalog).
    catalog: Mapping[str, CatalogEntry] = field(default_factory=dict, compare=False)

    def real_roots(self) -> list[Path]:
        return [Path(os.path.realpath(r)) for r in self.local_roots]

    def real_protected(self) -> list[Path]:
        return [Path(os.path.realpath(p)) for p in self.protected]


def nexa_state_dirs() -> list[Path]:
    """Nexa's own state on this machine (keys, database, logs): never a dataset or a model."""
    return [nexa_home()]


def protected_dirs(store: ArtifactStore, extra: Iterable[Path] = ()) -> tuple[Path, ...]:
    """The artifact store's root (a local store) plus Nexa's state directories and ``extra``."""
    dirs: list[Path] = [*nexa_state_dirs(), *extra]
    info = store.describe()
    if info.get("kind") == "local" and info.get("root"):
        dirs.append(Path(str(info["root"])))
    return tuple(dirs)


def is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def roots_within(roots: Iterable[str | Path], ceiling: Iterable[str | Path]) -> list[Path]:
    """The real paths of ``roots`` that lie inside some directory of ``ceiling`` (a grant, narrowed)."""
    limits = [Path(os.path.realpath(c)) for c in ceiling]
    real = (Path(os.path.realpath(r)) for r in roots)
    return [r for r in real if any(is_under(r, limit) for limit in limits)]


def check_artifact(access: Access, store: ArtifactStore, artifact_id: str, kind: RefKind) -> None:
    """Raise ``AccessDenied(<kind>_not_found)`` unless the job's tenant owns ``artifact_id``."""
    prefix = id_prefix(artifact_id)
    wanted = _ARTIFACT_PREFIXES[kind]
    label = _PREFIX_KIND.get(prefix or "", kind) if kind in ("model", "teacher") else kind
    if prefix not in wanted:
        raise AccessDenied(
            f"{kind}_not_found",
            f"{artifact_id!r} is not a {' or '.join(_PREFIX_KIND[p] for p in wanted)} id",
        )
    if access.tenant_id is None:
        return
    missing = AccessDenied(f"{kind}_not_found", f"{label} {artifact_id} not found")
    if access.owner_of is not None:
        if access.owner_of(artifact_id) != access.tenant_id:
            # The same answer whether it does not exist or belongs to someone else.
            raise missing
        return
    try:
        manifest = store.read_manifest(artifact_id, verify=False)
    except ArtifactError as exc:
        raise missing from exc
    if manifest.tenant_id != access.tenant_id:
        raise missing
    own_earlier_output = access.job_id is not None and manifest.job_id == access.job_id
    if access.trust is not None and not own_earlier_output:
        try:
            access.trust.check(manifest)
        except SignatureError as exc:
            raise AccessDenied("artifact_unsigned", f"{label} {artifact_id} cannot be used: {exc}") from exc


def local_path(access: Access, raw: str, kind: RefKind, *, shown: str | None = None) -> Path:
    """The real path of local reference ``raw`` if the tenant may read it there; else ``AccessDenied``.

    Containment is decided on the real path (symlinks resolved) before existence,
    so nothing is said about files outside the granted roots.
    """
    shown = shown or raw
    roots = access.real_roots()
    if not roots:
        raise AccessDenied(
            f"{kind}_not_allowed",
            f"{shown!r}: local paths are not enabled for this tenant on this server; "
            "upload the data (POST /v1/datasets) and use its id, or ask an admin to grant a local root",
        )
    real = Path(os.path.realpath(raw))
    if not any(is_under(real, root) for root in roots):
        raise AccessDenied(
            f"{kind}_not_allowed", f"{shown!r} is outside the local directories granted to this tenant"
        )
    check_not_protected(access, real, kind, shown)
    return real


def check_not_protected(access: Access, real: Path, kind: RefKind, shown: str) -> None:
    """Refuse a real path inside the artifact store or Nexa's state, or one that contains them."""
    for guarded in access.real_protected():
        if is_under(real, guarded):
            raise AccessDenied(
                f"{kind}_not_allowed",
                f"{shown!r} is inside Nexa's own storage; refer to stored artifacts by their ids",
            )


def check_scanned_file(access: Access, real: Path, kind: RefKind, shown: str) -> None:
    """Each file found while scanning a directory: under a granted root and outside protected storage."""
    if not any(is_under(real, root) for root in access.real_roots()):
        raise AccessDenied(f"{kind}_not_allowed", f"{shown!r} links outside the granted directories")
    check_not_protected(access, real, kind, shown)


def check_bucket(access: Access, bucket: str, kind: RefKind, shown: str) -> None:
    """Refuse ``s3://bucket/…`` unless the bucket is granted to the tenant."""
    if access.tenant_id is not None and bucket not in access.s3_buckets:
        raise AccessDenied(
            f"{kind}_not_allowed",
            f"{shown!r}: bucket {bucket!r} is not granted to this tenant; upload the data instead, "
            "or ask an admin to grant the bucket",
        )


def catalog_entry(access: Access, value: str, kind: RefKind) -> CatalogEntry | None:
    """The catalog's entry when ``value`` is a catalog name; None when it is some other reference.

    A bare name the catalog lacks is ``<kind>_not_found``, naming the setting. A
    model to load must be one (an endpoint entry serves only as a teacher).
    """
    if kind not in ("model", "teacher"):
        return None
    name = value.strip()
    entry = access.catalog.get(name)
    if entry is None:
        if parse_reference(name, kind).form == "catalog":
            raise AccessDenied(f"{kind}_not_found", not_in_catalog_message(name, kind))
        return None
    if kind == "model" and entry.is_endpoint:
        raise AccessDenied(
            "invalid_model_ref",
            f"{name!r} is an inference endpoint in the model catalog: it can teach or judge, "
            "but a model to train or evaluate must have weights to load",
        )
    return entry


def catalog_directory(access: Access, entry: CatalogEntry, name: str, kind: RefKind) -> Path:
    """The real path of a catalog entry's model directory, outside Nexa's own storage."""
    assert entry.source is not None
    real = Path(os.path.realpath(entry.source))
    check_not_protected(access, real, kind, name)
    if not (real / "config.json").is_file():
        raise AccessDenied(
            f"{kind}_not_found",
            f"{name!r}: the model catalog points at {entry.source}, which is not a model directory here",
        )
    return real


def parse_or_deny(value: str, kind: RefKind) -> ParsedRef:
    parsed = parse_reference(value, kind)
    if parsed.form == "invalid":
        raise AccessDenied(
            f"invalid_{kind}_ref" if kind != "dataset" else "invalid_dataset_uri",
            f"{value!r}: {parsed.reason}",
        )
    if parsed.form == "relative":
        raise AccessDenied(
            f"invalid_{kind}_ref" if kind != "dataset" else "invalid_dataset_uri",
            f"{value!r} is a relative path; use an id, an absolute path under a granted root, or a URI",
        )
    return parsed


def check_reference(access: Access, store: ArtifactStore, ref: JobReference) -> None:
    """The whole check for one reference a job carries; ``AccessDenied`` names the field.

    Datasets are checked in full by ``nexa_store.datasets`` (which calls
    back into this module); models, checkpoints and teachers here; URLs by the
    outbound policy.
    """
    try:
        _check(access, store, ref)
    except AccessDenied as exc:
        exc.field = exc.field or ref.field
        raise


def _check(access: Access, store: ArtifactStore, ref: JobReference) -> None:
    if ref.kind == "dataset":
        from nexa_store.datasets import check_dataset_ref

        check_dataset_ref(ref.value, store=store, access=access)
        return
    if ref.kind == "url":
        from nexa_store.outbound import check_url

        check_url(ref.value)
        return
    entry = catalog_entry(access, ref.value, ref.kind)
    if entry is not None:
        # The platform's own choice: no tenant grant applies. Its directory may exist
        # only where jobs run, so the gateway (which has no catalog paths) skips it.
        return
    parsed = parse_or_deny(ref.value, ref.kind)
    if parsed.form == "artifact":
        check_artifact(access, store, parsed.value, ref.kind)
        return
    if ref.kind == "checkpoint":
        raise AccessDenied("checkpoint_not_found", f"{ref.value!r} is not a checkpoint id (ckpt_…)")
    if parsed.form == "path":
        real = local_path(access, parsed.value, ref.kind, shown=ref.value)
        if not (real / "config.json").is_file():
            raise AccessDenied(
                f"{ref.kind}_not_found", f"{ref.value!r} is not a model directory (no config.json)"
            )
        return
    if parsed.form == "hf":
        return  # public data
    if parsed.form in ("provider", "http") and ref.kind == "teacher":
        return  # an endpoint: its URL is checked by the outbound policy where it is called
    raise AccessDenied(
        f"invalid_{ref.kind}_ref",
        f"{ref.value!r}: a {ref.kind} is a ckpt_ id, an absolute path under a granted root, or a Hugging Face id",
    )
