"""Unpacking an uploaded tar archive into an artifact writer's directory, refusing what could escape it.

Worker artifact uploads and users' model uploads both arrive as tar streams; one
unpacker checks every member before anything is written.
"""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

from nexa.contracts.artifacts import MANIFEST_NAME
from nexa_gateway.errors import ApiError
from nexa_store.base import ArtifactError
from nexa_store.hashing import check_rel_path

MAX_MEMBERS = 100_000


def bad_upload(message: str) -> ApiError:
    return ApiError(422, "invalid_upload", message)


def unpack(
    archive: Path,
    dest: Path,
    *,
    special: str | None = None,
    special_max_bytes: int = 0,
    check: Callable[[str], None] | None = None,
) -> bytes | None:
    """Unpack the tar at ``archive`` into ``dest`` (plain files and directories only).

    Names are checked before anything is written: no absolute paths, no ``..``, no
    links or devices, no manifest of the uploader's own; ``check`` may refuse a path
    by raising. The ``special`` member (when named) is returned, not written.
    """
    found: bytes | None = None
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for count, member in enumerate(tar):
                if count >= MAX_MEMBERS:
                    raise bad_upload(f"more than {MAX_MEMBERS} entries")
                name = member.name.removeprefix("./")
                if member.isdir():
                    continue  # directories follow from the files' paths
                if not member.isfile():
                    raise bad_upload(f"{member.name!r}: only plain files are accepted (no links or devices)")
                if special is not None and name == special:
                    if member.size > special_max_bytes:
                        raise bad_upload(f"{special} is larger than {special_max_bytes} bytes")
                    handle = tar.extractfile(member)
                    found = handle.read() if handle is not None else b""
                    continue
                try:
                    rel = check_rel_path(name)
                except (ValueError, ArtifactError) as exc:
                    raise bad_upload(f"{member.name!r}: {exc}") from exc
                if rel == MANIFEST_NAME:
                    raise bad_upload(f"{MANIFEST_NAME} is written by the gateway, not uploaded")
                if check is not None:
                    check(rel)
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    raise bad_upload(f"{member.name!r} has no data")
                with source, target.open("xb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
    except tarfile.TarError as exc:
        raise bad_upload(f"not a tar archive: {exc}") from exc
    except FileExistsError as exc:
        raise bad_upload(f"a file appears twice in the archive: {exc.filename}") from exc
    return found
