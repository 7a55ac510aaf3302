"""Serving throughput: 16 concurrent clients against the batching server vs plain ``generate`` one at a time.

The server (``python -m nexa_engines.serve``, a separate process) groups concurrent
requests into one decode batch with a shared KV cache. The baseline is what a
naive server does: Hugging Face ``model.generate`` for one request after another,
in this process, on the same model and thread count. Both produce greedy
completions of the same prompts with the same token budget; throughput is
completion tokens per second of wall time. Both run back to back in one
invocation, so the ratio holds on a shared machine.

    NEXA_TORCH_THREADS=2 .venv/bin/python bench/bench_serving.py [--clients 16 --requests 4 --max-tokens 32]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import torch

from nexa_engines.models.loading import ResolvedModel, load_model, load_tokenizer
from nexa_engines.models.prompt import format_prompt
from nexa_engines.models.runtime import configure_threads
from nexa_engines.models.tiny import TinyConfig, build_tiny_model, corpus_for, learnable_rows

# The serving process refuses callers without a key: the bench uses an endpoint key of its own.
BENCH_KEY = "nexa_ep_bench"
BENCH_AUTH = {"Authorization": f"Bearer {BENCH_KEY}"}
MODEL = TinyConfig(hidden_size=256, intermediate_size=688, num_layers=4, num_heads=8, vocab_size=512)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(
    model_dir: Path, port: int, batch: int, wait_ms: float, log: Path
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "nexa_engines.serve", "--model-dir", str(model_dir), "--port", str(port)]
    cmd += ["--max-batch-size", str(batch), "--max-wait-ms", str(wait_ms)]
    with log.open("wb") as out:
        env = dict(os.environ, NEXA_SERVE_KEY_SHA256=hashlib.sha256(BENCH_KEY.encode()).hexdigest())
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-2000:]}")
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("server not ready after 120 s")


def served(url: str, prompts: list[str], clients: int, max_tokens: int) -> dict[str, Any]:
    """``clients`` threads, each sending its share of ``prompts`` one after another."""

    def one(prompt: str) -> int:
        r = httpx.post(
            f"{url}/v1/completions",
            json={"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0},
            headers=BENCH_AUTH,
            timeout=600,
        )
        r.raise_for_status()
        return int(r.json()["usage"]["completion_tokens"])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        tokens = sum(pool.map(one, prompts))
    seconds = time.perf_counter() - started
    stats = httpx.get(f"{url}/nexa/stats", timeout=10, headers=BENCH_AUTH).json()
    return {
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
        "server": stats,
    }


@torch.no_grad()
def sequential(model_dir: Path, prompts: list[str], max_tokens: int) -> dict[str, Any]:
    """Hugging Face ``generate``, one request at a time."""
    resolved = ResolvedModel(str(model_dir), str(model_dir))
    tokenizer = load_tokenizer(resolved)
    model = load_model(resolved, dtype=torch.float32).eval()
    tokens = 0
    started = time.perf_counter()
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        out = model.generate(
            **ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        tokens += int(out.shape[1] - ids["input_ids"].shape[1])
    seconds = time.perf_counter() - started
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--max-wait-ms", type=float, default=50.0, help="how long the server waits to fill a batch"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out/serving.json"))
    args = parser.parse_args(argv)
    threads = configure_threads()
    rows = learnable_rows(0)
    prompts = [format_prompt(r["instruction"]) for r in rows[: args.clients * args.requests]]
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        model_dir = build_tiny_model(Path(tmp) / "model", corpus_for(rows), MODEL)
        port = _free_port()
        server = _start_server(model_dir, port, args.clients, args.max_wait_ms, Path(tmp) / "server.log")
        try:
            batched = served(f"http://127.0.0.1:{port}", prompts, args.clients, args.max_tokens)
        finally:
            server.terminate()
            server.wait(30)
        plain = sequential(model_dir, prompts, args.max_tokens)
    result = {
        "threads": threads,
        "clients": args.clients,
        "requests": len(prompts),
        "max_tokens": args.max_tokens,
        "max_wait_ms": args.max_wait_ms,
        "model": MODEL.__dict__,
        "batched": batched,
        "sequential_generate": plain,
        "speedup": round(batched["tokens_per_s"] / plain["tokens_per_s"], 2),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
