"""``hf://datasets/...`` inputs read through the real huggingface_hub code, offline, from a cache the test builds."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("huggingface_hub")

from nexa.contracts import AuditSpec  # noqa: E402
from nexa_engines.audit import run  # noqa: E402
from nexa_engines.engine import EngineError  # noqa: E402
from tests.unit.test_audit_engine import make_ctx  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hub cache holding dataset acme/tiny-qa at one commit, laid out as huggingface_hub writes it."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "datasets--acme--tiny-qa"
    snapshot = repo / "snapshots" / COMMIT / "data"
    snapshot.mkdir(parents=True)
    rows = {
        "instruction": [f"What is {i} plus 1?" for i in range(30)],
        "response": [str(i + 1) for i in range(30)],
    }
    pq.write_table(pa.table(rows), snapshot / "train.parquet")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    # The library reads these when it is called: point it at the cache and keep it off the network.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_an_hf_dataset_is_audited_from_the_hub_cache(tmp_path: Path, hub_cache: Path) -> None:
    ctx = make_ctx(tmp_path)
    result = run(ctx, AuditSpec(dataset_uri="hf://datasets/acme/tiny-qa/data/train.parquet"))
    assert result["num_rows"] == 30
    manifest = ctx.store.read_manifest(result["dataset_id"])
    assert manifest.inputs[0].uri == "hf://datasets/acme/tiny-qa/data/train.parquet"
    assert manifest.inputs[0].sha256  # the bytes that were read, hashed


def test_a_file_the_cache_lacks_is_dataset_not_found(tmp_path: Path, hub_cache: Path) -> None:
    with pytest.raises(EngineError) as missing:
        run(make_ctx(tmp_path), AuditSpec(dataset_uri="hf://datasets/acme/tiny-qa/data/test.parquet"))
    assert missing.value.code == "dataset_not_found"
    with pytest.raises(EngineError) as malformed:
        run(make_ctx(tmp_path), AuditSpec(dataset_uri="hf://datasets/acme/tiny-qa"))
    assert malformed.value.code == "invalid_dataset_uri"
