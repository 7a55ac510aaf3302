"""The model catalog: parsing the setting, and how a catalog name is resolved for a job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nexa.contracts.catalog import BUILTIN_CATALOG, CatalogError, catalog_json, parse_catalog
from nexa_store.access import Access, AccessDenied, catalog_directory, catalog_entry


def test_builtin_names_and_overrides() -> None:
    catalog = parse_catalog(
        json.dumps({"Mistral-7B": "/models/m", "house": {"base_url": "https://llm.example/v1"}})
    )
    assert catalog["Mistral-7B"].source == "/models/m"  # a deployment repoints a built-in name
    assert catalog["llama-3-8b"].hub_id == "meta-llama/Meta-Llama-3-8B"
    assert catalog["gpt-4"].is_endpoint and catalog["gpt-4"].api_key_env == "OPENAI_API_KEY"
    assert catalog["house"].model is None  # asked for by its catalog name
    assert parse_catalog(None) == BUILTIN_CATALOG
    assert parse_catalog(catalog_json(catalog)) == catalog


def test_catalog_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"tiny": "hf://org/tiny"}))
    assert parse_catalog(str(path))["tiny"].hub_id == "org/tiny"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "expected an object"),
        ('{"x": "relative/../dir"}', "'source'"),
        ('{"x": "just-a-name"}', "absolute directory"),
        ('{"x": {"base_url": "ftp://a"}}', "http(s)"),
        ('{"x": {"source": "o/m", "base_url": "https://a"}}', "exactly one"),
        ('{"x": {"source": "o/m", "model": "m"}}', "endpoint entry"),
        ('{"bad name!": "o/m"}', "not a model name"),
        ("/nonexistent/catalog.json", "cannot read"),
    ],
)
def test_bad_catalogs_are_named(raw: str, message: str) -> None:
    with pytest.raises(CatalogError) as refused:
        parse_catalog(raw)
    assert message in str(refused.value) and "NEXA_MODEL_CATALOG" in str(refused.value)


def test_catalog_entry_resolution(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    store = tmp_path / "store"
    store.mkdir()
    catalog = parse_catalog(
        json.dumps({"mine": str(model), "inside": str(store), "openai/gpt-4o-mini": "o/m"})
    )
    access = Access(tenant_id="tnt_a", protected=(store,), catalog=catalog)
    entry = catalog_entry(access, "mine", "model")
    assert entry is not None and catalog_directory(access, entry, "mine", "model") == model.resolve()
    # An exact catalog name wins over the reference's usual meaning.
    assert catalog_entry(access, "openai/gpt-4o-mini", "teacher") == catalog["openai/gpt-4o-mini"]
    # Other references are not the catalog's business.
    for other in ("org/model", "ckpt_" + "a" * 26, "/abs/path", "hf://o/m"):
        assert catalog_entry(access, other, "model") is None
    assert catalog_entry(access, "Mistral-7B", "dataset") is None
    with pytest.raises(AccessDenied) as unknown:
        catalog_entry(access, "Llama-99B", "model")
    assert unknown.value.code == "model_not_found" and "NEXA_MODEL_CATALOG" in unknown.value.message
    with pytest.raises(AccessDenied) as endpoint:
        catalog_entry(access, "gpt-4", "model")
    assert endpoint.value.code == "invalid_model_ref"
    assert catalog_entry(access, "gpt-4", "teacher") == catalog["gpt-4"]
    # The platform's choice still never reads Nexa's own storage.
    inside = catalog_entry(access, "inside", "model")
    assert inside is not None
    with pytest.raises(AccessDenied) as protected:
        catalog_directory(access, inside, "inside", "model")
    assert protected.value.code == "model_not_allowed"
