"""File hashing, manifest paths, and verification of a local artifact directory.

Both backends hash a staging directory the same way and verify a local copy the
same way, so "what a manifest promises" has one definition.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from nexa.contracts import ArtifactManifest, FileEntry
from nexa.contracts.artifacts import MANIFEST_NAME
from nexa_store.base import ArtifactError, IntegrityError

CHUNK = 1024 * 1024


def sha256_stream(stream: BinaryIO) -> tuple[str, int]:
    """The hex sha256 and byte count of everything left in ``stream``."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def sha256_bytes(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _open_regular(path: Path, label: str) -> BinaryIO:
    # O_NOFOLLOW plus fstat on the open handle: what is read is the regular file
    # that was checked, never a symlink swapped in between check and read.
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError as exc:
        raise IntegrityError(f"{label}: listed in the manifest but missing") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IntegrityError(f"{label}: is a symlink (artifacts hold regular files only)") from exc
        raise
    handle = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        handle.close()
        raise IntegrityError(f"{label}: not a regular file")
    return handle


def sha256_file(path: Path, label: str | None = None) -> tuple[str, int]:
    """The hex sha256 and size of a regular file, refusing to follow a symlink."""
    with _open_regular(path, label or path.name) as handle:
        return sha256_stream(handle)


def read_regular_file(path: Path, label: str | None = None) -> bytes:
    """The bytes of a regular file, refusing to follow a symlink."""
    with _open_regular(path, label or path.name) as handle:
        return handle.read()


def check_rel_path(rel_path: str) -> str:
    """Return ``rel_path`` if it is a safe manifest path (relative, '/'-separated, no '..'), else raise."""
    parts = rel_path.split("/")
    if (
        not rel_path
        or rel_path.startswith("/")
        or "\\" in rel_path
        or "\x00" in rel_path
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise IntegrityError(f"unsafe file path in manifest: {rel_path!r}")
    return rel_path


def walk_files(root: Path) -> dict[str, Path]:
    """Every file under ``root`` by '/'-separated relative path; symlinks and special files are refused."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        # os.walk lists a symlink to a directory among dirnames; check those too.
        for name in [*dirnames, *filenames]:
            full = base / name
            rel = full.relative_to(root).as_posix()
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise IntegrityError(f"{rel}: is a symlink (artifacts hold regular files only)")
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise IntegrityError(f"{rel}: not a regular file")
            found[rel] = full
    return found


def hash_tree(root: Path) -> list[FileEntry]:
    """A manifest entry for every file under a staging directory, sorted by path."""
    files = walk_files(root)
    if MANIFEST_NAME in files:
        raise ArtifactError(f"{MANIFEST_NAME} is written by the store; an artifact may not contain its own")
    entries = []
    for rel in sorted(files):
        check_rel_path(rel)
        digest, size = sha256_file(files[rel], rel)
        entries.append(FileEntry(path=rel, sha256=digest, size=size))
    return entries


def same_files(a: Iterable[FileEntry], b: Iterable[FileEntry]) -> bool:
    """True when both lists name the same paths with the same hashes and sizes."""
    return {(e.path, e.sha256, e.size) for e in a} == {(e.path, e.sha256, e.size) for e in b}


def check_manifest_paths(manifest: ArtifactManifest) -> None:
    """Raise ``IntegrityError`` for an unsafe, duplicate or reserved path in the manifest."""
    seen: set[str] = set()
    for entry in manifest.files:
        check_rel_path(entry.path)
        if entry.path == MANIFEST_NAME or entry.path in seen:
            raise IntegrityError(f"manifest lists {entry.path!r} more than once or as the manifest itself")
        seen.add(entry.path)


def compare_listing(manifest: ArtifactManifest, present: dict[str, int]) -> None:
    """Raise ``IntegrityError`` when the files present (path → size) differ from the manifest in name or size."""
    listed = {e.path: e for e in manifest.files}
    missing = sorted(set(listed) - set(present))
    if missing:
        raise IntegrityError(f"{missing[0]}: listed in the manifest but missing")
    extra = sorted(set(present) - set(listed) - {MANIFEST_NAME})
    if extra:
        raise IntegrityError(f"{extra[0]}: present but not listed in the manifest")
    for path, entry in sorted(listed.items()):
        if present[path] != entry.size:
            raise IntegrityError(f"{path}: size {present[path]} differs from the manifest's {entry.size}")


def verify_local_dir(root: Path, manifest: ArtifactManifest) -> None:
    """Raise ``IntegrityError`` unless ``root`` holds exactly the manifest's files with their hashes."""
    check_manifest_paths(manifest)
    files = walk_files(root)
    compare_listing(manifest, {rel: path.lstat().st_size for rel, path in files.items()})
    for entry in manifest.files:
        digest, _ = sha256_file(files[entry.path], entry.path)
        if digest != entry.sha256:
            raise IntegrityError(f"{entry.path}: sha256 differs from the manifest")


def manifest_json(manifest: ArtifactManifest) -> bytes:
    """The bytes written as ``manifest.json``."""
    return manifest.model_dump_json(indent=2).encode("utf-8") + b"\n"


def parse_manifest(data: bytes, artifact_id: str, kind: str) -> ArtifactManifest:
    """Parse ``manifest.json`` bytes; ``IntegrityError`` if they are not a manifest of this artifact."""
    try:
        manifest = ArtifactManifest.model_validate_json(data)
    except ValueError as exc:
        raise IntegrityError(f"{artifact_id}/{MANIFEST_NAME} is not a valid manifest: {exc}") from exc
    if manifest.artifact_id != artifact_id or manifest.kind != kind:
        raise IntegrityError(
            f"{artifact_id}/{MANIFEST_NAME} describes {manifest.kind} {manifest.artifact_id}, not {artifact_id}"
        )
    check_manifest_paths(manifest)
    return manifest


def find_entry(manifest: ArtifactManifest, rel_path: str) -> FileEntry | None:
    """The manifest entry for ``rel_path``, if listed."""
    return next((e for e in manifest.files if e.path == rel_path), None)


def is_verified_copy(directory: Path, manifest: ArtifactManifest) -> bool:
    """True when ``directory`` already holds a verified copy of the artifact (its manifest and files)."""
    local = directory / MANIFEST_NAME
    if not local.is_file():
        return False
    try:
        copy = ArtifactManifest.model_validate_json(local.read_bytes())
        if copy.artifact_id != manifest.artifact_id or not same_files(copy.files, manifest.files):
            return False
        verify_local_dir(directory, manifest)
    except (ValueError, IntegrityError):
        return False
    return True
