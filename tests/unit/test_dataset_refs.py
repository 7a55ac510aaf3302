"""Dataset references: what a job may name (checked at submit time) and what an engine gets to read."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from nexa.ids import new_id
from nexa_store import (
    DatasetRefError,
    LocalArtifactStore,
    check_dataset_ref,
    detect_format,
    fetch_dataset,
)
from nexa_store.access import Access

TENANT = "tnt_aaaaaaaaaaaaaaaaaaaaaaaaaa"
PARQUET_BYTES = b"PAR1 not really parquet PAR1"  # the resolver never parses rows; engines do


@dataclass
class World:
    store: LocalArtifactStore
    allowed: Path
    outside: Path
    stored_ds: str
    workdir: Path

    def access(self, roots: list[Path]) -> Access:
        return Access(TENANT, local_roots=tuple(roots), protected=(self.store.root,))


@pytest.fixture
def world(tmp_path: Path) -> World:
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "train.parquet").write_bytes(PARQUET_BYTES)
    (allowed / "Chat.JSONL").write_text('{"a": 1}\n')
    (allowed / "rows.csv").write_text("a\n1\n")
    (allowed / "rows.json").write_text('{"a": 1}\n')
    (allowed / "rows.jsonl.gz").write_bytes(b"\x1f\x8b")
    (allowed / "notes.txt").write_text("hello")
    (allowed / "my data.csv").write_text("a\n1\n")
    (outside / "secret.csv").write_text("password\nhunter2\n")
    (allowed / "escape.csv").symlink_to(outside / "secret.csv")
    (allowed / "inner-link.csv").symlink_to(allowed / "rows.csv")
    (allowed / "parts").mkdir()
    (allowed / "parts" / "part-0.parquet").write_bytes(PARQUET_BYTES)
    (allowed / "parts" / "part-1.parquet").write_bytes(PARQUET_BYTES + b"1")
    (allowed / "parts" / "_SUCCESS").write_text("")
    (allowed / "empty-dir").mkdir()
    (allowed / "leaky-parts").mkdir()
    (outside / "stolen.parquet").write_bytes(PARQUET_BYTES)
    (allowed / "leaky-parts" / "part-0.parquet").symlink_to(outside / "stolen.parquet")
    os.mkfifo(allowed / "pipe.csv")

    store = LocalArtifactStore(tmp_path / "artifacts")
    stored = new_id("ds")
    with store.begin("dataset", stored) as writer:
        (writer.path / "data.csv").write_text("q,a\nhi,hello\n")
        (writer.path / "report.html").write_text("<p>ok</p>")
        writer.commit(tenant_id=TENANT)
    return World(store, allowed, outside, stored, tmp_path / "work")


def resolve(world: World, uri: str) -> str:
    return uri.format(
        allowed=world.allowed, outside=world.outside, ds=world.stored_ds, store=world.store.root
    )


ACCEPTED = [
    ("{allowed}/train.parquet", "parquet"),
    ("{allowed}/Chat.JSONL", "jsonl"),
    ("{allowed}/rows.csv", "csv"),
    ("{allowed}/rows.json", "jsonl"),
    ("{allowed}/rows.jsonl.gz", "jsonl"),
    ("{allowed}/inner-link.csv", "csv"),
    ("{allowed}/parts", "parquet"),
    ("file://{allowed}/train.parquet", "parquet"),
    ("file://localhost{allowed}/my%20data.csv", "csv"),
    ("{ds}", "csv"),
]


@pytest.mark.parametrize(("uri", "fmt"), ACCEPTED)
def test_accepted_refs_resolve_to_a_readable_file(world: World, uri: str, fmt: str) -> None:
    text = resolve(world, uri)
    check_dataset_ref(text, store=world.store, access=world.access([world.allowed]))
    resolved = fetch_dataset(
        text, store=world.store, access=world.access([world.allowed]), workdir=world.workdir
    )
    assert resolved.format == fmt and resolved.uri == text
    assert resolved.path.exists()
    if resolved.path.is_file():
        assert resolved.sha256 == hashlib.sha256(resolved.path.read_bytes()).hexdigest()


REFUSED = [
    ("{outside}/secret.csv", "dataset_not_allowed"),
    ("{allowed}/escape.csv", "dataset_not_allowed"),
    ("file://{allowed}/escape.csv", "dataset_not_allowed"),
    ("{allowed}/leaky-parts", "dataset_not_allowed"),
    ("{store}/datasets/{ds}/data.csv", "dataset_not_allowed"),
    ("{outside}/missing.csv", "dataset_not_allowed"),  # says nothing about files outside the roots
    ("{allowed}/missing.parquet", "dataset_not_found"),
    ("{allowed}/notes.txt", "invalid_dataset_uri"),
    ("{allowed}/empty-dir", "dataset_unreadable"),
    ("{allowed}/pipe.csv", "dataset_unreadable"),
    ("ds_aaaaaaaaaaaaaaaaaaaaaaaaaa", "dataset_not_found"),
    ("ds_nope", "invalid_dataset_uri"),
    ("http://example.com/train.parquet", "invalid_dataset_uri"),
    ("https://example.com/train.parquet", "invalid_dataset_uri"),
    ("ftp://example.com/train.csv", "invalid_dataset_uri"),
    ("file://evil.example.com/etc/passwd.csv", "invalid_dataset_uri"),
    ("train.parquet", "invalid_dataset_uri"),
    ("../allowed/train.parquet", "invalid_dataset_uri"),
    ("{allowed}/../outside/secret.csv", "invalid_dataset_uri"),
    ("", "invalid_dataset_uri"),
    ("s3://bucket/train.parquet", "dataset_not_allowed"),  # the local store has no bucket
    ("s3://bucket/notes.txt", "invalid_dataset_uri"),
    ("s3:///train.parquet", "invalid_dataset_uri"),
]


@pytest.mark.parametrize(("uri", "code"), REFUSED)
def test_refused_refs_name_the_problem(world: World, uri: str, code: str) -> None:
    text = resolve(world, uri)
    with pytest.raises(DatasetRefError) as info:
        check_dataset_ref(text, store=world.store, access=world.access([world.allowed]))
    assert info.value.code == code
    assert info.value.message  # user-facing text, never empty
    with pytest.raises(DatasetRefError) as fetched:
        fetch_dataset(text, store=world.store, access=world.access([world.allowed]), workdir=world.workdir)
    assert fetched.value.code == code


def test_no_allowed_roots_means_no_local_paths(world: World) -> None:
    with pytest.raises(DatasetRefError) as info:
        check_dataset_ref(str(world.allowed / "rows.csv"), store=world.store, access=world.access([]))
    assert info.value.code == "dataset_not_allowed"
    assert "upload" in info.value.message
    # Stored datasets stay reachable.
    check_dataset_ref(world.stored_ds, store=world.store, access=world.access([]))


def test_allowed_root_given_through_a_symlink(world: World, tmp_path: Path) -> None:
    link = tmp_path / "data-link"
    link.symlink_to(world.allowed)
    check_dataset_ref(str(link / "rows.csv"), store=world.store, access=world.access([link]))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(world: World) -> None:
    locked = world.allowed / "locked.csv"
    locked.write_text("a\n1\n")
    locked.chmod(0)
    with pytest.raises(DatasetRefError) as info:
        check_dataset_ref(str(locked), store=world.store, access=world.access([world.allowed]))
    assert info.value.code == "dataset_unreadable"


def test_stored_dataset_fetch_returns_its_data_file(world: World) -> None:
    resolved = fetch_dataset(
        world.stored_ds, store=world.store, access=world.access([]), workdir=world.workdir
    )
    assert resolved.artifact_id == world.stored_ds
    assert resolved.path.name == "data.csv"
    assert resolved.path.read_text() == "q,a\nhi,hello\n"
    assert resolved.sha256 == hashlib.sha256(b"q,a\nhi,hello\n").hexdigest()


def test_tampered_stored_dataset_is_unreadable(world: World) -> None:
    (world.store.root / "datasets" / world.stored_ds / "data.csv").write_text("q,a\nhi,evil\n")
    with pytest.raises(DatasetRefError) as info:
        fetch_dataset(world.stored_ds, store=world.store, access=world.access([]), workdir=world.workdir)
    assert info.value.code == "dataset_unreadable"
    assert "data.csv" in info.value.message


def test_stored_dataset_needs_exactly_one_data_file(world: World) -> None:
    two = new_id("ds")
    with world.store.begin("dataset", two) as writer:
        (writer.path / "data.csv").write_text("a\n1\n")
        (writer.path / "data.parquet").write_bytes(PARQUET_BYTES)
        writer.commit(tenant_id=TENANT)
    with pytest.raises(DatasetRefError, match="exactly one data file") as info:
        fetch_dataset(two, store=world.store, access=world.access([]), workdir=world.workdir)
    assert info.value.code == "dataset_unreadable"


def test_parquet_directory_hash_changes_with_any_part(world: World) -> None:
    parts = str(world.allowed / "parts")
    before = fetch_dataset(
        parts, store=world.store, access=world.access([world.allowed]), workdir=world.workdir
    )
    (world.allowed / "parts" / "part-1.parquet").write_bytes(PARQUET_BYTES + b"2")
    after = fetch_dataset(
        parts, store=world.store, access=world.access([world.allowed]), workdir=world.workdir
    )
    assert before.sha256 != after.sha256


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("x.parquet", "parquet"),
        ("X.PARQUET", "parquet"),
        ("a.b.jsonl", "jsonl"),
        ("x.json", "jsonl"),
        ("x.jsonl.gz", "jsonl"),
        ("dir/x.CSV", "csv"),
    ],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


@pytest.mark.parametrize("name", ["x.txt", "x.csv.bak", "x", "x.gz", "parquet"])
def test_detect_format_refuses_other_extensions(name: str) -> None:
    with pytest.raises(DatasetRefError) as info:
        detect_format(name)
    assert info.value.code == "invalid_dataset_uri"
