"""Time of check, time of use: local inputs are read through descriptors the check opened.

A tenant that controls a granted directory swaps a checked file, or one of its
parent directories, for a link into the artifact store after the check. The
engine must still read what was checked, never the store.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from nexa.ids import new_id
from nexa_engines.engine import EngineError
from nexa_engines.models.loading import resolve_model
from nexa_store import LocalArtifactStore, fetch_dataset
from nexa_store.access import Access
from nexa_store.pinned import PinError, open_real_file, pin_view, pinned_count, release_views

TENANT = "tnt_aaaaaaaaaaaaaaaaaaaaaaaaaa"
SECRET = b"another tenant's rows"


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, LocalArtifactStore, Path, Path]:
    granted = tmp_path / "granted"
    granted.mkdir()
    store = LocalArtifactStore(tmp_path / "artifacts")
    secret_id = new_id("ds")
    with store.begin("dataset", secret_id) as writer:
        (writer.path / "data.csv").write_bytes(SECRET)
        writer.commit(tenant_id="tnt_bbbbbbbbbbbbbbbbbbbbbbbbbb")
    secret = store.root / "datasets" / secret_id / "data.csv"
    assert secret.read_bytes() == SECRET
    return granted, store, secret, tmp_path / "work"


def access(granted: Path, store: LocalArtifactStore) -> Access:
    return Access(TENANT, local_roots=(granted,), protected=(store.root,))


def swap_for_link(path: Path, target: Path) -> None:
    """Replace ``path`` (a file or a directory) with a symlink to ``target``, as an attacker would."""
    aside = path.with_name(path.name + ".old")
    path.rename(aside)
    path.symlink_to(target)


def test_a_file_swapped_for_a_link_after_the_check_is_read_as_checked(layout) -> None:  # type: ignore[no-untyped-def]
    granted, store, secret, work = layout
    (granted / "rows.csv").write_bytes(b"q,a\nmine,yes\n")
    resolved = fetch_dataset(
        str(granted / "rows.csv"), store=store, access=access(granted, store), workdir=work
    )
    swap_for_link(granted / "rows.csv", secret)
    assert resolved.path.read_bytes() == b"q,a\nmine,yes\n"
    assert resolved.path.name == "rows.csv" and resolved.format == "csv"
    release_views(work)


def test_a_parent_directory_swapped_after_the_check_changes_nothing(layout) -> None:  # type: ignore[no-untyped-def]
    granted, store, secret, work = layout
    parts = granted / "parts"
    parts.mkdir()
    (parts / "part-0.parquet").write_bytes(b"PAR1 mine PAR1")
    resolved = fetch_dataset(str(parts), store=store, access=access(granted, store), workdir=work)
    # The whole directory now points into the store, with a same-named file there.
    (secret.parent / "part-0.parquet").write_bytes(SECRET)
    swap_for_link(parts, secret.parent)
    assert (resolved.path / "part-0.parquet").read_bytes() == b"PAR1 mine PAR1"
    release_views(work)


def test_a_model_directory_is_loaded_from_the_files_that_were_checked(layout) -> None:  # type: ignore[no-untyped-def]
    granted, store, secret, work = layout
    model = granted / "tiny-model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "gpt2"}')
    (model / "sub" / "weights.bin").write_bytes(b"weights")
    (model / "linked-dir").symlink_to(store.root, target_is_directory=True)  # never followed
    resolved = resolve_model(str(model), store=store, workdir=work, access=access(granted, store))
    view = Path(resolved.source)
    assert view != model and not view.is_relative_to(granted)
    swap_for_link(model / "config.json", secret)
    swap_for_link(model / "sub", secret.parent)
    assert (view / "config.json").read_text() == '{"model_type": "gpt2"}'
    assert (view / "sub" / "weights.bin").read_bytes() == b"weights"
    assert not (view / "linked-dir").exists()
    assert release_views(work) == 2
    assert not (view / "config.json").exists()  # the descriptor is gone with the attempt


def test_a_model_file_linking_into_the_store_is_refused(layout) -> None:  # type: ignore[no-untyped-def]
    granted, store, secret, work = layout
    model = granted / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "pytorch_model.bin").symlink_to(secret)
    with pytest.raises(EngineError) as info:
        resolve_model(str(model), store=store, workdir=work, access=access(granted, store))
    assert info.value.code == "model_not_allowed"


def test_opening_refuses_a_link_anywhere_on_the_checked_path(tmp_path: Path) -> None:
    real = tmp_path / "a" / "b" / "file.txt"
    real.parent.mkdir(parents=True)
    real.write_text("x")
    fd = open_real_file(real)
    os.close(fd)
    swap_for_link(tmp_path / "a", tmp_path / "a.old")  # same contents, but now through a link
    with pytest.raises(PinError, match="changed after it was checked"):
        open_real_file(real)


def test_opening_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(PinError, match="not a regular file"):
        open_real_file(fifo)


def test_a_failed_pin_leaves_no_view_and_no_descriptor(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_text("ok")
    before = pinned_count()
    view = tmp_path / "view"
    with pytest.raises(PinError):
        pin_view(view, [(PurePosixPath("good"), good), (PurePosixPath("gone"), tmp_path / "missing")])
    assert not view.exists() and pinned_count() == before
