"""The deploy engine's serving process, called with the official ``openai`` client and OIP v2 over httpx."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("torch")
openai = pytest.importorskip("openai")

from nexa.contracts import DeploySpec  # noqa: E402
from nexa_engines.deploy import run as deploy  # noqa: E402
from nexa_engines.models.loading import ResolvedModel  # noqa: E402
from nexa_engines.models.tiny import TinyConfig, build_tiny_model, corpus_for, learnable_rows  # noqa: E402
from nexa_engines.train.engine import _register_base  # noqa: E402
from nexa_store.serving import deployment_status, request_stop  # noqa: E402
from tests.unit.test_engine_fixtures import make_ctx  # noqa: E402


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("serve")
    base = build_tiny_model(
        root / "base",
        corpus_for(learnable_rows()[:80]),
        TinyConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=300),
    )
    ctx = make_ctx(root, job_id="job_ffffffffffffffffffffffffff")
    checkpoint_id = _register_base(ctx, ResolvedModel(str(base), str(base)))
    pytest.MonkeyPatch().setenv("NEXA_HOME", str(root / "home"))
    result = deploy(ctx, DeploySpec(checkpoint_id=checkpoint_id, max_batch_size=8))
    yield ctx, result
    request_stop(ctx.store, result["deployment_id"], requested_by="test teardown")


def test_openai_client_completions_chat_and_streaming(deployment: tuple[Any, dict[str, Any]]) -> None:
    _, dp = deployment
    client = openai.OpenAI(base_url=dp["openai_base_url"], api_key=dp["api_key"], max_retries=0)
    assert [m.id for m in client.models.list().data] == [dp["model_name"]]
    done = client.completions.create(model=dp["model_name"], prompt="What is", max_tokens=4, temperature=0)
    assert done.usage is not None and 1 <= done.usage.completion_tokens <= 4
    assert done.choices[0].finish_reason in ("stop", "length")
    chat = client.chat.completions.create(
        model=dp["model_name"],
        messages=[{"role": "user", "content": "Add 2 and 3."}],
        max_tokens=4,
        temperature=0,
    )
    assert chat.choices[0].message.role == "assistant" and chat.usage is not None
    pieces = list(
        client.chat.completions.create(
            model=dp["model_name"],
            messages=[{"role": "user", "content": "Add 2 and 3."}],
            max_tokens=4,
            temperature=0,
            stream=True,
        )
    )
    streamed = "".join(p.choices[0].delta.content or "" for p in pieces)
    assert pieces[-1].choices[0].finish_reason in ("stop", "length")
    assert streamed.strip() == (chat.choices[0].message.content or "").strip()  # greedy: same text either way
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=dp["model_name"], prompt="x", max_tokens=0)


def test_the_endpoint_refuses_callers_without_its_key(deployment: tuple[Any, dict[str, Any]]) -> None:
    _, dp = deployment
    for key in ("", "nexa_ep_wrong", "nexa_not-a-key"):
        client = openai.OpenAI(base_url=dp["openai_base_url"], api_key=key or "x", max_retries=0)
        if not key:
            client = openai.OpenAI(
                base_url=dp["openai_base_url"],
                api_key="x",
                max_retries=0,
                default_headers={"Authorization": ""},
            )
        with pytest.raises(openai.AuthenticationError) as info:
            client.models.list()
        assert info.value.status_code == 401 and "API key" in str(info.value)
    oip = httpx.post(f"{dp['inference_url']}/v2/models/{dp['model_name']}/infer", json={"inputs": []})
    assert oip.status_code == 401 and oip.json()["error"]["code"] == "invalid_api_key"
    # Probes stay open for the kubelet; the key never appears in the deployment record.
    assert httpx.get(f"{dp['inference_url']}/v2/health/ready").status_code == 200
    ctx, _ = deployment
    record = ctx.store.read_file(dp["deployment_id"], "deployment.json").decode()
    assert dp["api_key"] not in record and "endpoint_key_sha256" in record


def _client(dp: dict[str, Any]) -> Any:
    return openai.OpenAI(base_url=dp["openai_base_url"], api_key=dp["api_key"], max_retries=0)


def test_models_are_checked_and_errors_are_openai_shaped(deployment: tuple[Any, dict[str, Any]]) -> None:
    _, dp = deployment
    client, name = _client(dp), dp["model_name"]
    assert client.models.retrieve(name).id == name
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    for call in (
        lambda: client.completions.create(model="gpt-4", prompt="x", max_tokens=1),
        lambda: client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}]),
    ):
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert info.value.code == "model_not_found" and "gpt-4" in info.value.message
    auth = {"Authorization": f"Bearer {dp['api_key']}"}
    bad = httpx.post(
        f"{dp['openai_base_url']}/completions",
        json={"model": name, "prompt": "x", "max_tokens": -1},
        headers=auth,
    )
    error = bad.json()["error"]
    assert bad.status_code == 400 and error["type"] == "invalid_request_error"
    assert "max_tokens" in error["message"] and "pydantic" not in bad.text and "input" not in error["message"]
    missing = httpx.get(f"{dp['openai_base_url']}/nothing-here", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert httpx.post(f"{dp['openai_base_url']}/completions", content=b"{", headers=auth).status_code == 400


def test_token_prompts_batches_n_seed_and_stop(deployment: tuple[Any, dict[str, Any]]) -> None:
    _, dp = deployment
    client, name = _client(dp), dp["model_name"]
    ids = [5, 9, 13, 20, 7]
    one = client.completions.create(model=name, prompt=ids, max_tokens=4, temperature=0)
    batch = client.completions.create(model=name, prompt=[ids, ids[:2]], max_tokens=4, temperature=0)
    assert [c.index for c in batch.choices] == [0, 1] and batch.choices[0].text == one.choices[0].text
    assert batch.usage is not None and batch.usage.prompt_tokens == len(ids) + 2
    texts = client.completions.create(
        model=name, prompt=["What is", "Add 2"], max_tokens=3, temperature=0, n=2
    )
    assert [c.index for c in texts.choices] == [0, 1, 2, 3]
    assert texts.choices[0].text == texts.choices[1].text  # greedy: n copies agree
    # Seeded sampling repeats itself, call after call.
    sampled = [
        [
            c.text
            for c in client.completions.create(
                model=name, prompt="What is", max_tokens=6, temperature=1.0, seed=11, n=3
            ).choices
        ]
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]
    # A stop string ends the text before it.
    free = (
        client.completions.create(model=name, prompt="What is", max_tokens=8, temperature=0).choices[0].text
    )
    stop = free.strip()[:2]
    if stop:
        cut = client.completions.create(
            model=name, prompt="What is", max_tokens=8, temperature=0, stop=[stop]
        )
        assert stop not in cut.choices[0].text and cut.choices[0].finish_reason == "stop"


def test_streams_send_the_same_text_and_the_usage_when_asked(deployment: tuple[Any, dict[str, Any]]) -> None:
    _, dp = deployment
    client, name = _client(dp), dp["model_name"]
    messages = [{"role": "user", "content": "What is the opposite of hot?"}]
    whole = client.chat.completions.create(model=name, messages=messages, max_tokens=12, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model=name,
            messages=messages,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content  # exactly, not after trimming
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    pieces = list(
        client.completions.create(
            model=name,
            prompt="What is",
            max_tokens=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    plain = client.completions.create(model=name, prompt="What is", max_tokens=5, temperature=0)
    assert "".join(p.choices[0].text for p in pieces if p.choices) == plain.choices[0].text
    assert pieces[-1].usage is not None and pieces[-1].usage.total_tokens == plain.usage.total_tokens  # type: ignore[union-attr]


def test_echo_and_logprobs_are_the_models_own(deployment: tuple[Any, dict[str, Any]], tmp_path: Path) -> None:
    """What lm-evaluation-harness sends for a loglikelihood task, checked against the model run here."""
    import torch

    from nexa_engines.models.generation import encode_prompt
    from nexa_engines.models.loading import load_model, load_tokenizer, resolve_model
    from nexa_store.access import Access

    ctx, dp = deployment
    client, name = _client(dp), dp["model_name"]
    resolved = resolve_model(dp["checkpoint_id"], store=ctx.store, workdir=tmp_path, access=Access(None))
    model, tokenizer = load_model(resolved).eval(), load_tokenizer(resolved)

    def reference(ids: list[int]) -> tuple[list[float], int]:
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
        return [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))], int(torch.argmax(logp[-1]))

    # Token ids, echoed, one new token: every token but the first gets its log-probability.
    ids = [5, 9, 13, 20, 7]
    out = client.completions.create(
        model=name, prompt=ids, max_tokens=1, temperature=0, echo=True, logprobs=2
    )
    lp = out.choices[0].logprobs
    assert (
        lp is not None
        and lp.tokens is not None
        and lp.token_logprobs is not None
        and lp.top_logprobs is not None
    )
    assert len(lp.tokens) == len(ids) + 1 and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    prompt_scores, greedy = reference(ids)
    expected, _ = reference([*ids, greedy])
    assert lp.token_logprobs[1:] == pytest.approx(expected, abs=1e-4)
    assert lp.token_logprobs[1 : len(ids)] == pytest.approx(prompt_scores, abs=1e-4)
    # The greedy token is the best of its top_logprobs (lm-eval's is_greedy), and each holds 2 entries.
    assert all(len(t) == 2 for t in lp.top_logprobs[1:])
    last = lp.top_logprobs[-1]
    assert max(last, key=last.get) == lp.tokens[-1]  # type: ignore[arg-type]
    assert out.choices[0].text.startswith(tokenizer.decode(ids))
    assert lp.text_offset is not None and lp.text_offset[0] == 0

    # Text, echo only (max_tokens 0): the prompt scored, BOS not reported as one of its tokens.
    scored = client.completions.create(model=name, prompt="What is", max_tokens=0, echo=True, logprobs=0)
    text_ids = encode_prompt(tokenizer, "What is")
    lp2 = scored.choices[0].logprobs
    assert scored.choices[0].text == "What is" and lp2 is not None and lp2.token_logprobs is not None
    shown = text_ids[1:] if tokenizer.bos_token_id is not None else text_ids
    assert len(lp2.token_logprobs) == len(shown)
    assert lp2.token_logprobs[-1] == pytest.approx(reference(text_ids)[0][-1], abs=1e-4)
    # Without echo, only the new tokens are scored.
    fresh = client.completions.create(model=name, prompt=ids, max_tokens=3, temperature=0, logprobs=1)
    assert fresh.choices[0].logprobs is not None and len(fresh.choices[0].logprobs.tokens or []) == 3


def _lm_eval_tasks(root: Path) -> list[dict[str, Any]]:
    """A multiple-choice and a generation task over rows this test writes (lm-eval's YAML, as dicts)."""
    rows = [
        {"q": "Say apple.", "choices": ["apple", "pear", "plum"], "label": 0, "a": "apple"},
        {"q": "Repeat the word pear.", "choices": ["plum", "pear", "fig"], "label": 1, "a": "pear"},
        {"q": "What is the opposite of up?", "choices": ["down", "left", "up"], "label": 0, "a": "down"},
    ]
    root.mkdir(parents=True, exist_ok=True)
    data = root / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    common = {
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(root / "cache")},
        "test_split": "test",
        "doc_to_text": "{{q}}",
        "metadata": {"version": 1.0},
    }
    return [
        {**common, "task": "nexa_mc", "output_type": "multiple_choice", "doc_to_choice": "choices",
         "doc_to_target": "label", "metric_list": [{"metric": "acc"}]},
        {**common, "task": "nexa_gen", "output_type": "generate_until", "doc_to_target": "a",
         "generation_kwargs": {"until": ["\n"], "max_gen_toks": 6, "do_sample": False},
         "metric_list": [{"metric": "exact_match"}]},
    ]  # fmt: skip


def test_lm_eval_harness_scores_the_endpoint_as_it_scores_the_model_in_process(
    deployment: tuple[Any, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lm-eval's own OpenAI completions client (loglikelihood and generation) against the endpoint,
    and lm-eval's Hugging Face runner on the same weights here: the same log-likelihoods and text."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    from nexa_engines.models.loading import resolve_model
    from nexa_store.access import Access

    ctx, dp = deployment
    resolved = resolve_model(dp["checkpoint_id"], store=ctx.store, workdir=tmp_path, access=Access(None))
    monkeypatch.setenv("OPENAI_API_KEY", dp["api_key"])  # where lm-eval's local-completions reads its key
    remote = LocalCompletionsAPI(
        base_url=f"{dp['openai_base_url']}/completions",
        model=dp["model_name"],
        tokenizer_backend="huggingface",
        tokenizer=resolved.source,
        num_concurrent=1,
        max_retries=1,
        max_length=128,
    )
    local = HFLM(pretrained=resolved.source, batch_size=4, max_length=128, device="cpu")
    runs = {}
    for label, lm in (("endpoint", remote), ("local", local)):
        out = lm_eval.simple_evaluate(model=lm, tasks=_lm_eval_tasks(tmp_path / label), log_samples=True)
        assert out is not None
        runs[label] = out
    endpoint, here = runs["endpoint"], runs["local"]
    for task in ("nexa_mc", "nexa_gen"):
        assert endpoint["n-samples"][task]["effective"] == 3
    # Loglikelihood: each choice's score, row by row, within float tolerance of the weights run here.
    scored = [[float(r[0][0]) for r in s["resps"]] for s in endpoint["samples"]["nexa_mc"]]
    expected = [[float(r[0][0]) for r in s["resps"]] for s in here["samples"]["nexa_mc"]]
    assert len(scored) == 3 and all(len(row) == 3 for row in scored)
    for got, want in zip(scored, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-3)
    assert endpoint["results"]["nexa_mc"]["acc,none"] == here["results"]["nexa_mc"]["acc,none"]
    # Generation: greedy, so the endpoint writes what the model writes here.
    texts = [s["filtered_resps"] for s in endpoint["samples"]["nexa_gen"]]
    assert texts == [s["filtered_resps"] for s in here["samples"]["nexa_gen"]]
    assert (
        endpoint["results"]["nexa_gen"]["exact_match,none"] == here["results"]["nexa_gen"]["exact_match,none"]
    )


def test_tritonclient_speaks_binary_tensors_and_reads_config_and_errors(
    deployment: tuple[Any, dict[str, Any]],
) -> None:
    """The official Triton HTTP client, at its defaults (binary tensor data both ways)."""
    import numpy as np

    triton = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    _, dp = deployment
    # tritonclient writes its own headers into the dict it is given: each call gets a fresh one.
    name, auth = dp["model_name"], {"Authorization": f"Bearer {dp['api_key']}"}
    client = triton.InferenceServerClient(dp["inference_url"].removeprefix("http://"))
    try:
        assert "binary_tensor_data" in client.get_server_metadata(headers=dict(auth))["extensions"]
        config = client.get_model_config(name, headers=dict(auth))
        assert [i["name"] for i in config["input"]] == ["text_input"]
        assert client.get_model_metadata(name, headers=dict(auth))["outputs"][0]["name"] == "text_output"
        prompts = np.array([[b"What is"], [b"Add 2"]], dtype=np.object_)

        def ask(binary: bool) -> tuple[Any, Any]:
            tensor = triton.InferInput("text_input", [2, 1], "BYTES")
            tensor.set_data_from_numpy(prompts, binary_data=binary)
            outputs = [
                triton.InferRequestedOutput("text_output", binary_data=binary),
                triton.InferRequestedOutput("completion_tokens", binary_data=binary),
            ]
            result = client.infer(
                name,
                [tensor],
                outputs=outputs,
                headers=dict(auth),
                parameters={"max_tokens": 4, "temperature": 0},
            )
            return result.as_numpy("text_output"), result.as_numpy("completion_tokens")

        texts, counts = ask(binary=True)
        assert texts.shape == (2, 1) and counts.shape == (2, 1) and counts.dtype == np.int64
        json_texts, json_counts = ask(binary=False)
        assert [t.decode() if isinstance(t, bytes) else t for t in texts.ravel()] == [
            t.decode() if isinstance(t, bytes) else t for t in json_texts.ravel()
        ]
        assert counts.tolist() == json_counts.tolist()
        # No outputs named: every output comes back, in binary.
        tensor = triton.InferInput("text_input", [2, 1], "BYTES")
        tensor.set_data_from_numpy(prompts)
        everything = client.infer(
            name, [tensor], headers=dict(auth), parameters={"max_tokens": 4, "temperature": 0}
        )
        assert everything.as_numpy("completion_tokens").tolist() == counts.tolist()
        with pytest.raises(InferenceServerException, match="unknown model"):
            client.infer("not-this-one", [tensor], headers=dict(auth))
        with pytest.raises(InferenceServerException, match="unknown model"):
            client.get_model_config("not-this-one", headers=dict(auth))
    finally:
        client.close()


def test_kserve_rest_client_infers_in_json_and_binary(deployment: tuple[Any, dict[str, Any]]) -> None:
    """KServe's own Python REST client (``kserve.InferenceRESTClient``, protocol v2), as a user of a
    KServe InferenceService would call it: readiness, JSON and binary tensors, and an error."""
    import asyncio

    import numpy as np

    kserve = pytest.importorskip("kserve")
    from kserve.protocol.infer_type import RequestedOutput

    _, dp = deployment
    name, auth = dp["model_name"], {"Authorization": f"Bearer {dp['api_key']}"}
    base = dp["inference_url"]
    prompts = np.array([[b"What is"], [b"Add 2"]], dtype=np.object_)

    def request(binary: bool) -> Any:
        tensor = kserve.InferInput("text_input", [2, 1], "BYTES")
        tensor.set_data_from_numpy(prompts, binary_data=binary)
        outputs = [
            RequestedOutput("text_output", parameters={"binary_data": binary}),
            RequestedOutput("completion_tokens", parameters={"binary_data": binary}),
        ]
        return kserve.InferRequest(
            model_name=name,
            infer_inputs=[tensor],
            request_outputs=outputs,
            parameters={"max_tokens": 4, "temperature": 0},
        )

    async def calls() -> tuple[Any, ...]:
        client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", retries=0, timeout=60))
        try:
            ready = await client.is_server_ready(base, headers=dict(auth))
            model_ready = await client.is_model_ready(base, name, headers=dict(auth))
            as_json = await client.infer(base, request(False), model_name=name, headers=dict(auth))
            as_binary = await client.infer(base, request(True), model_name=name, headers=dict(auth))
            try:
                await client.infer(base, request(False), model_name="not-this-one", headers=dict(auth))
                refused = None
            except Exception as exc:  # kserve raises httpx.HTTPStatusError with the server's body
                refused = exc
            return ready, model_ready, as_json, as_binary, refused
        finally:
            await client.close()

    ready, model_ready, as_json, as_binary, refused = asyncio.run(calls())
    assert ready is True and model_ready is True
    outputs = {}
    for label, response in (("json", as_json), ("binary", as_binary)):
        assert isinstance(response, kserve.InferResponse), (label, response)
        by_name = {o.name: o for o in response.outputs}
        assert by_name["completion_tokens"].shape == [2, 1] and by_name["text_output"].shape == [2, 1]
        texts = by_name["text_output"].as_numpy().ravel().tolist()
        counts = by_name["completion_tokens"].as_numpy().ravel().tolist()
        outputs[label] = ([t.decode() if isinstance(t, bytes) else t for t in texts], counts)
        assert all(1 <= c <= 4 for c in counts)
    assert outputs["json"] == outputs["binary"]  # greedy: the same answers either way
    assert isinstance(refused, httpx.HTTPStatusError) and refused.response.status_code == 404
    assert "unknown model" in refused.response.json()["error"]


# Last: it stops the module's deployment.
def test_oip_v2_and_undeploy(deployment: tuple[Any, dict[str, Any]]) -> None:
    ctx, dp = deployment
    url, name = dp["inference_url"], dp["model_name"]
    auth = {"Authorization": f"Bearer {dp['api_key']}"}
    assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{url}/v2/models/{name}", headers=auth).json()["inputs"][0]["name"] == "text_input"
    body = {
        "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}],
        "parameters": {"max_tokens": 3},
    }
    out = httpx.post(f"{url}/v2/models/{name}/infer", json=body, timeout=60, headers=auth).json()
    assert out["outputs"][0]["shape"] == [2] and len(out["outputs"][0]["data"]) == 2
    assert httpx.post(f"{url}/v2/models/nope/infer", json=body, headers=auth).status_code == 404
    assert request_stop(ctx.store, dp["deployment_id"], requested_by="test")
    deadline = time.monotonic() + 20
    while deployment_status(ctx.store, dp["deployment_id"]) != "stopped" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert deployment_status(ctx.store, dp["deployment_id"]) == "stopped"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/v2/health/live", timeout=2)
    assert _exits(dp["pid"], within=15.0)


def _exits(pid: int, within: float) -> bool:
    """True once ``pid`` is gone (or a zombie waiting for its parent) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if "zombie" in Path(f"/proc/{pid}/status").read_text().lower():
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.2)
    return False
