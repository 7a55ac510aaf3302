"""Turn a job's ``teacher`` string into something that answers chat messages.

* a model catalog name (``gpt-4``, or any name the platform lists): its endpoint
  or its model;
* ``dp_…``: a Nexa deployment; its ``deployment.json`` gives the OpenAI base URL.
* ``ckpt_…`` or an absolute path: a local model, run in this process (batched).
* ``provider/model`` (e.g. ``openai/gpt-4o-mini``): an OpenAI-compatible endpoint;
  ``teacher_base_url`` overrides the provider's default URL, the key comes from the
  environment variable ``teacher_api_key_env`` (default ``<PROVIDER>_API_KEY``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nexa.contracts import DistillSpec, GenerateSpec
from nexa.contracts.catalog import CatalogEntry
from nexa.contracts.refs import ARTIFACT_SCHEME
from nexa.ids import is_id
from nexa_engines.engine import EngineContext, EngineError
from nexa_engines.teacher.client import ChatClient, Completion
from nexa_store.access import AccessDenied, catalog_entry, check_artifact
from nexa_store.base import ArtifactError
from nexa_store.outbound import check_url, key_for_url
from nexa_store.serving import DEPLOYMENT_FILE, deployment_status

PROVIDER_URLS = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together": "https://api.together.xyz/v1",
    "mistral": "https://api.mistral.ai/v1",
    "deepseek": "https://api.deepseek.com/v1",
}


class Teacher(Protocol):
    """Answers batches of chat conversations."""

    name: str

    def answer(
        self, conversations: Sequence[list[dict[str, str]]], *, max_tokens: int, temperature: float
    ) -> list[Completion]: ...

    def close(self) -> None: ...


@dataclass
class EndpointTeacher:
    """An OpenAI-compatible endpoint; each conversation is one HTTP request (the caller adds concurrency)."""

    name: str
    client: ChatClient
    batch_size: int = 1

    def answer(
        self, conversations: Sequence[list[dict[str, str]]], *, max_tokens: int, temperature: float
    ) -> list[Completion]:
        return [self.client.chat(c, max_tokens=max_tokens, temperature=temperature) for c in conversations]

    def close(self) -> None:
        self.client.close()


@dataclass
class LocalTeacher:
    """A Hugging Face model in this process, answering a batch of conversations at once."""

    name: str
    model: Any
    tokenizer: Any
    batch_size: int = 16

    def answer(
        self, conversations: Sequence[list[dict[str, str]]], *, max_tokens: int, temperature: float
    ) -> list[Completion]:
        from nexa_engines.models.generation import GenerationRequest, generate_batch
        from nexa_engines.models.prompt import clean_completion, format_chat
        from nexa_engines.serve.openai_api import CHAT_STOPS

        requests = [
            GenerationRequest(format_chat(c), max_tokens=max_tokens, temperature=temperature, stop=CHAT_STOPS)
            for c in conversations
        ]
        results = generate_batch(self.model, self.tokenizer, requests)
        return [Completion(clean_completion(r.text), r.prompt_tokens, r.completion_tokens) for r in results]

    def close(self) -> None:
        return None


def resolve_teacher(
    ctx: EngineContext, teacher: str, base_url: str | None, api_key_env: str | None, *, timeout: float = 120.0
) -> EndpointTeacher | LocalTeacher:
    """The teacher ``teacher`` names; ``EngineError`` with what to fix when it names nothing usable."""
    ref = teacher.strip()
    try:
        entry = catalog_entry(ctx.access, ref, "teacher")
    except AccessDenied as exc:
        raise EngineError(exc.code, exc.message) from exc
    if entry is not None:
        return _catalog_teacher(ctx, ref, entry, timeout=timeout)
    if ref.startswith(ARTIFACT_SCHEME):
        ref = ref[len(ARTIFACT_SCHEME) :].strip("/")
    if ref.startswith("dp_"):
        if not is_id(ref, "dp"):
            raise EngineError("teacher_not_found", f"{ref!r} is not a valid deployment id")
        try:
            check_artifact(ctx.access, ctx.store, ref, "teacher")
        except AccessDenied as exc:
            raise EngineError("teacher_not_found", exc.message) from exc
        try:
            record = json.loads(ctx.store.read_file(ref, DEPLOYMENT_FILE))
        except ArtifactError as exc:
            raise EngineError("teacher_not_found", f"deployment {ref} does not exist: {exc}") from exc
        if deployment_status(ctx.store, ref) != "running":
            raise EngineError("teacher_not_found", f"deployment {ref} was undeployed")
        try:
            # The record was written by whichever worker ran the deploy job (maybe a tenant's own
            # node): its URL is checked like any user-supplied one.
            check_url(str(record["openai_base_url"]), resolve=True)
        except AccessDenied as exc:
            raise EngineError(exc.code, exc.message) from exc
        # The endpoint checks callers: this job presents the key its claim carried for it.
        client = ChatClient(
            str(record["openai_base_url"]),
            str(record["model_name"]),
            api_key=ctx.endpoint_keys.get(ref),
            timeout=timeout,
        )
        return EndpointTeacher(ref, client)
    if ref.startswith(("ckpt_", "/", "file:", "hf://")):
        from nexa_engines.models.loading import load_model, load_tokenizer, resolve_model
        from nexa_engines.models.runtime import configure_threads, pick_device

        configure_threads()
        device = pick_device()
        resolved = resolve_model(ref, store=ctx.store, workdir=ctx.workdir, access=ctx.access)
        model = load_model(resolved, dtype=device.dtype).to(device.torch_device).eval()
        return LocalTeacher(ref, model, load_tokenizer(resolved))
    provider, sep, model = ref.partition("/")
    if not sep or not model:
        raise EngineError(
            "teacher_not_found",
            f"teacher {ref!r}: use provider/model (e.g. openai/gpt-4o-mini), a dp_ deployment, a ckpt_ checkpoint "
            "or an absolute model path",
        )
    url = base_url or PROVIDER_URLS.get(provider.lower())
    if url is None:
        raise EngineError("teacher_not_found", f"unknown provider {provider!r}: pass teacher_base_url")
    try:
        # A user-supplied URL is called from inside the platform: the outbound policy decides.
        check_url(str(url), resolve=True)
    except AccessDenied as exc:
        raise EngineError(exc.code, exc.message) from exc
    official = PROVIDER_URLS.get(provider.lower())
    env_name = api_key_env or (f"{provider.upper().replace('-', '_')}_API_KEY" if base_url is None else None)
    try:
        key = key_for_url(env_name, str(url), official_url=official)
    except AccessDenied as exc:
        raise EngineError(exc.code, exc.message) from exc
    if key is None and base_url is None:
        raise EngineError("teacher_no_key", f"no API key for {provider}: set {env_name} on the worker")
    return EndpointTeacher(ref, ChatClient(str(url), model, api_key=key, timeout=timeout))


def _catalog_teacher(
    ctx: EngineContext, name: str, entry: CatalogEntry, *, timeout: float
) -> EndpointTeacher | LocalTeacher:
    """A teacher the platform's catalog names: its endpoint, or its model loaded here."""
    if entry.base_url is None:
        from nexa_engines.models.loading import load_model, load_tokenizer, resolve_model
        from nexa_engines.models.runtime import configure_threads, pick_device

        configure_threads()
        device = pick_device()
        resolved = resolve_model(name, store=ctx.store, workdir=ctx.workdir, access=ctx.access)
        model = load_model(resolved, dtype=device.dtype).to(device.torch_device).eval()
        return LocalTeacher(name, model, load_tokenizer(resolved))
    try:
        # The operator chose this endpoint, but every call leaves through one outbound policy.
        check_url(entry.base_url, resolve=True)
        # The key goes to the endpoint the operator paired it with, and nowhere else.
        key = key_for_url(entry.api_key_env, entry.base_url, official_url=entry.base_url)
    except AccessDenied as exc:
        raise EngineError(exc.code, exc.message) from exc
    if key is None and entry.api_key_env is not None:
        raise EngineError("teacher_no_key", f"no API key for {name}: set {entry.api_key_env} where jobs run")
    return EndpointTeacher(
        name, ChatClient(entry.base_url, entry.model or name, api_key=key, timeout=timeout)
    )


def teacher_for(ctx: EngineContext, spec: DistillSpec | GenerateSpec) -> EndpointTeacher | LocalTeacher:
    """The teacher a distill or generate request names, with its endpoint and key settings."""
    base_url = str(spec.teacher_base_url) if spec.teacher_base_url else None
    if spec.teacher is None:
        # The gateway fills in its default teacher; a NexaJob applied with kubectl must name one.
        raise EngineError("teacher_required", "the request names no teacher: set 'teacher'")
    return resolve_teacher(ctx, spec.teacher, base_url, spec.teacher_api_key_env)
