"""The model catalog: what a model name in a request stands for on this platform.

The SPEC and Forge write models by name (``model="Mistral-7B"``,
``teacher_model="gpt-4"``, ``student_model="llama-3-8b"``). A name means
whatever the platform's operator says it means, so it is looked up in one
catalog, the setting ``NEXA_MODEL_CATALOG`` over a few built-in names:

* a model to load: a Hugging Face id (``owner/name``) or an absolute directory
  on the machines that run jobs (the platform's own: no tenant grant is needed,
  Nexa's own storage is still refused);
* an OpenAI-compatible endpoint: ``base_url``, the ``model`` it is asked for and
  the environment variable holding its key (teachers and judges only).

Any reference that is exactly a catalog name resolves through the catalog (so a
deployment may also repoint ``openai/gpt-4o-mini``); a bare name (no ``/``) the
catalog lacks is ``model_not_found`` / ``teacher_not_found``, naming the setting.
The gateway checks names at submit and hands the catalog to workers with each
claim; pods read the same setting. This module is pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from nexa.contracts.common import StrictModel

CATALOG_SETTING = "NEXA_MODEL_CATALOG"

# A catalog name: what a user types for a model ("Mistral-7B", "gpt-4o-mini", "llama-3-8b").
CATALOG_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


class CatalogEntry(StrictModel):
    """One name: a model to load (``source``) or an endpoint to call (``base_url``)."""

    source: str | None = Field(
        None,
        max_length=1024,
        description="Hugging Face id (owner/name, or hf://owner/name) or an absolute model directory.",
    )
    base_url: str | None = Field(
        None, max_length=2048, description="OpenAI-compatible endpoint root, e.g. https://api.openai.com/v1."
    )
    model: str | None = Field(
        None, max_length=200, description="Model name sent to the endpoint; the catalog name when unset."
    )
    api_key_env: str | None = Field(
        None,
        max_length=128,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable, where the job runs, that holds the endpoint's key.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> CatalogEntry:
        if (self.source is None) == (self.base_url is None):
            raise ValueError("give exactly one of 'source' (a model to load) or 'base_url' (an endpoint)")
        if self.source is not None:
            source = self.source.removeprefix("hf://")
            if not (source.startswith("/") or _HUB_ID_RE.match(source)) or ".." in source.split("/"):
                raise ValueError("'source' is a Hugging Face id owner/name or an absolute directory")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError("'base_url' is an http(s):// URL")
        if self.base_url is None and (self.model is not None or self.api_key_env is not None):
            raise ValueError("'model' and 'api_key_env' belong to an endpoint entry (with 'base_url')")
        return self

    @property
    def is_endpoint(self) -> bool:
        return self.base_url is not None

    @property
    def hub_id(self) -> str | None:
        """The Hugging Face id this entry loads, or None for a directory or an endpoint."""
        if self.source is None or self.source.startswith("/"):
            return None
        return self.source.removeprefix("hf://")


ModelCatalog = Mapping[str, CatalogEntry]

_OPENAI = "https://api.openai.com/v1"

# Names the seed documents use, pointed at where those models really are. A
# deployment adds to or overrides them with NEXA_MODEL_CATALOG.
BUILTIN_CATALOG: dict[str, CatalogEntry] = {
    "Mistral-7B": CatalogEntry(source="mistralai/Mistral-7B-v0.1"),
    "mistral-7b-instruct": CatalogEntry(source="mistralai/Mistral-7B-Instruct-v0.3"),
    "llama-3-8b": CatalogEntry(source="meta-llama/Meta-Llama-3-8B"),
    "llama-3-8b-instruct": CatalogEntry(source="meta-llama/Meta-Llama-3-8B-Instruct"),
    "gpt2": CatalogEntry(source="openai-community/gpt2"),
    "gpt-4": CatalogEntry(base_url=_OPENAI, model="gpt-4", api_key_env="OPENAI_API_KEY"),
    "gpt-4o": CatalogEntry(base_url=_OPENAI, model="gpt-4o", api_key_env="OPENAI_API_KEY"),
    "gpt-4o-mini": CatalogEntry(base_url=_OPENAI, model="gpt-4o-mini", api_key_env="OPENAI_API_KEY"),
}


class CatalogError(ValueError):
    """The catalog setting cannot be read; the message says where."""


def parse_catalog(raw: str | None) -> dict[str, CatalogEntry]:
    """The platform's catalog: the built-in names, then ``raw`` (a JSON object, or the path of a JSON file).

    A value is an entry object or a string, short for ``{"source": ...}``.
    """
    catalog = dict(BUILTIN_CATALOG)
    if raw is None or not raw.strip():
        return catalog
    text = raw.strip()
    if not text.startswith(("{", "[")):
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogError(f"{CATALOG_SETTING}: cannot read {path}: {exc.strerror or exc}") from exc
        loaded: Any = _load_document(text, path)
    else:
        loaded = _load_document(text, None)
    if not isinstance(loaded, dict):
        raise CatalogError(f"{CATALOG_SETTING}: expected an object of name → entry")
    for name, value in loaded.items():
        if not isinstance(name, str) or not (CATALOG_NAME_RE.match(name) or _HUB_ID_RE.match(name)):
            raise CatalogError(f"{CATALOG_SETTING}: {name!r} is not a model name")
        try:
            catalog[name] = CatalogEntry.model_validate(
                {"source": value} if isinstance(value, str) else value
            )
        except ValidationError as exc:
            detail = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise CatalogError(f"{CATALOG_SETTING}: entry {name!r}: {detail}") from exc
    return catalog


def _load_document(text: str, path: Path | None) -> Any:
    where = str(path) if path is not None else "the value"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{CATALOG_SETTING}: {where} is not valid JSON: {exc}") from exc


def catalog_json(catalog: ModelCatalog) -> str:
    """The catalog as ``parse_catalog`` reads it back (to hand to a process through its environment)."""
    return json.dumps({name: entry.model_dump(exclude_none=True) for name, entry in catalog.items()})


def is_catalog_name(value: str) -> bool:
    """True for a bare name (no ``/``) that only the catalog can give a meaning."""
    return bool(CATALOG_NAME_RE.match(value.strip()))


def not_in_catalog_message(value: str, kind: str) -> str:
    return (
        f"{value!r} is not a {kind} this platform knows: add it to the model catalog ({CATALOG_SETTING}), "
        "or name a Hugging Face id (owner/name), a ckpt_ checkpoint or an absolute path"
    )
