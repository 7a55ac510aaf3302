"""The serving process: load a model, batch requests, answer HTTP, stop when told.

Run by the deploy engine as a detached process (its own session, so it outlives
the job and the worker)::

    python -m nexa_engines.serve --checkpoint ckpt_… --store-config '{"kind": "local", …}' \
        --deployment-id dp_… --host 127.0.0.1 --port 8100

It watches the artifact store for the deployment's stop request (see
``control``) and also stops on SIGTERM; either way it records ``stopped``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nexa.config import nexa_home
from nexa.contracts.catalog import CATALOG_SETTING, parse_catalog

log = logging.getLogger("nexa.serve")
STOP_POLL_SECONDS = 2.0


def build_decoder(model: Any, tokenizer: Any) -> Callable[[Callable[[int, str], None]], Any]:
    """The batcher's decoder factory: a continuous ``DecodeBatch`` over ``model``."""
    from nexa_engines.models.generation import DecodeBatch

    def decoder(on_token: Callable[[int, str], None]) -> DecodeBatch:
        return DecodeBatch(model, tokenizer, on_token=on_token)

    return decoder


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nexa_engines.serve", description="Serve a Nexa checkpoint."
    )
    parser.add_argument("--checkpoint", help="checkpoint id (ckpt_…) in the artifact store")
    parser.add_argument("--model-dir", type=Path, help="a local model directory instead of a checkpoint")
    parser.add_argument("--store-config", default=None, help="the artifact store's describe() JSON")
    parser.add_argument(
        "--deployment-id", default=None, help="watch the store for this deployment's stop request"
    )
    parser.add_argument(
        "--model-name", default=None, help="name clients use (default: deployment or checkpoint id)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--workdir", type=Path, default=None, help="where a fetched checkpoint is kept")
    parser.add_argument(
        "--gateway-url",
        default=os.environ.get("NEXA_GATEWAY_URL"),
        help="accept API keys of --tenant, checked with this gateway (default: $NEXA_GATEWAY_URL)",
    )
    parser.add_argument("--tenant", default=None, help="the tenant whose API keys may call this endpoint")
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without any key check (local experiments only; never on a shared network)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the server until a stop request or a signal; returns the exit code."""
    args = _parse(argv)
    from nexa_engines.host_resources import prefer_passive_waits

    prefer_passive_waits()  # before anything imports torch
    from nexa import logs

    logs.configure("serve")
    import uvicorn

    from nexa_engines.models.loading import load_model, load_tokenizer, resolve_model
    from nexa_engines.models.runtime import configure_threads, pick_device
    from nexa_engines.serve.app import create_app
    from nexa_engines.serve.auth import EndpointAuth
    from nexa_engines.serve.batcher import BatchScheduler
    from nexa_engines.serve.metrics import ServingMetrics
    from nexa_engines.serve.tokens import TokenTools
    from nexa_store.access import Access
    from nexa_store.factory import store_from_config
    from nexa_store.serving import mark_stopped, stop_requested

    key_hashes = {h.strip() for h in os.environ.get("NEXA_SERVE_KEY_SHA256", "").split(",") if h.strip()}
    if os.environ.get("NEXA_SERVE_KEY", "").strip():  # a key from a Secret: keep only its hash
        key_hashes.add(hashlib.sha256(os.environ["NEXA_SERVE_KEY"].strip().encode()).hexdigest())
    if not args.insecure_no_auth and not key_hashes and not (args.gateway_url and args.tenant):
        print(
            "error: no way to check callers: set NEXA_SERVE_KEY or NEXA_SERVE_KEY_SHA256, "
            "or --gateway-url with --tenant (or pass --insecure-no-auth for a local experiment)",
            file=sys.stderr,
        )
        return 2
    if args.store_config:
        store = store_from_config(json.loads(args.store_config))
    elif args.checkpoint:  # a pod: the store is described by NEXA_S3_* in its environment
        from nexa_store.factory import store_from_env

        store = store_from_env(os.environ)
    else:
        store = None
    if args.checkpoint:
        if store is None:
            print("error: --checkpoint needs --store-config", file=sys.stderr)
            return 2
        workdir = args.workdir or nexa_home() / "serving"
        # The deploy job resolved the checkpoint for its tenant; the serving process is the platform's.
        resolved = resolve_model(
            args.checkpoint,
            store=store,
            workdir=workdir,
            access=Access(tenant_id=None, catalog=parse_catalog(os.environ.get(CATALOG_SETTING))),
        )
    elif args.model_dir:
        from nexa_engines.models.loading import ResolvedModel

        resolved = ResolvedModel(str(args.model_dir), str(args.model_dir))
    else:
        print("error: pass --checkpoint or --model-dir", file=sys.stderr)
        return 2
    threads = configure_threads()
    device = pick_device()
    tokenizer = load_tokenizer(resolved)
    model = load_model(resolved, dtype=device.dtype).to(device.torch_device).eval()
    log.info("loaded %s on %s (%d threads)", resolved.reference, device.note, threads)
    name = args.model_name or args.deployment_id or resolved.reference
    metrics = ServingMetrics(name)
    scheduler = BatchScheduler(
        decoder=build_decoder(model, tokenizer),
        max_batch_size=args.max_batch_size,
        max_wait_s=args.max_wait_ms / 1000,
        on_step=metrics.observe_step,
        on_done=metrics.observe_done,
    ).start()
    auth = EndpointAuth(
        endpoint_key_sha256=frozenset(key_hashes),
        gateway_url=args.gateway_url,
        tenant_id=args.tenant,
    )
    app = create_app(
        scheduler,
        name,
        metrics=metrics,
        auth=None if args.insecure_no_auth else auth,
        tokens=TokenTools(model, tokenizer),
    )
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
    reason = {"why": "signal"}
    done = threading.Event()

    def watch() -> None:
        while not done.wait(STOP_POLL_SECONDS):
            try:
                if store is not None and args.deployment_id and stop_requested(store, args.deployment_id):
                    log.info("stop requested for %s", args.deployment_id)
                    reason["why"] = "undeploy"
                    server.should_exit = True
                    return
            except Exception as exc:  # a store hiccup must not stop serving; try again next poll
                log.warning("could not check for a stop request: %s", exc)

    threading.Thread(target=watch, name="stop-watch", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    log.info("serving %s on http://%s:%d (OpenAI /v1, OIP /v2)", name, args.host, args.port)
    try:
        server.run()
    finally:
        done.set()
        scheduler.stop()
        if store is not None and args.deployment_id:
            try:
                mark_stopped(store, args.deployment_id, reason=reason["why"])
            except Exception as exc:
                log.error("could not record that %s stopped: %s", args.deployment_id, exc)
    log.info("stopped (%s)", reason["why"])
    return 0
