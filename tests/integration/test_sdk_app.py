"""The SDK against the real gateway app: the sync client over loopback HTTP, the async one in-process."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from nexa import (
    AsyncNexaClient,
    AuditSpec,
    AuthenticationError,
    ConflictError,
    JobCancelledError,
    JobState,
    NexaClient,
    NexaError,
    NotFoundError,
    PaymentRequiredError,
    ValidationError,
)
from nexa_gateway.main import create_app
from nexa_gateway.services import grants
from nexa_gateway.services.keys import create_api_key
from nexa_gateway.settings import Settings

pytestmark = pytest.mark.integration

WORKER_SECRET = "sdk-test-worker-secret"
UNKNOWN_JOB = "job_" + "z" * 26


@dataclass
class LiveGateway:
    app: FastAPI
    url: str
    root: Path

    def new_key(self, tenant: str) -> str:
        state = self.app.state.nexa
        with state.db.session() as session:
            created = create_api_key(session, tenant_name=tenant)
            # The tests read their own files: an admin grants the tenant that directory.
            grants.grant(session, state.settings, created.tenant_id, "local_root", str(self.root))
            return str(created.key)

    def dataset(self, name: str = "data.jsonl", rows: int = 3) -> Path:
        path = self.root / name
        path.write_text("".join(f'{{"text": "row number {i}"}}\n' for i in range(rows)))
        return path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """The gateway served by uvicorn on a free loopback port, in a thread of this process."""
    root = tmp_path_factory.mktemp("sdk-gw")
    settings = Settings(
        database_url=f"sqlite:///{root / 'nexa.db'}",
        artifact_root=root / "artifacts",
        allowed_dataset_roots=[root],
        worker_secret=WORKER_SECRET,
        bootstrap_api_key=None,
        key_cache_seconds=0,
        platform_signing_key=secrets.token_hex(32),
        log_poll_seconds=0.05,
    )
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    try:
        yield LiveGateway(app=app, url=f"http://127.0.0.1:{port}", root=root)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def client(live: LiveGateway) -> Iterator[NexaClient]:
    with NexaClient(live.new_key("acme"), live.url, max_retries=0) as sdk:
        yield sdk


class Worker:
    """Plays a pull worker over the raw worker protocol, so jobs can finish and print logs."""

    def __init__(self, live: LiveGateway) -> None:
        self.http = httpx.Client(base_url=live.url, timeout=10)
        r = self.http.post(
            "/v1/workers/register",
            json={"name": "sdk-test"},
            headers={"Authorization": f"Bearer {WORKER_SECRET}"},
        )
        assert r.status_code == 201, r.text
        self.http.headers["Authorization"] = f"Bearer {r.json()['token']}"

    def claim(self) -> dict[str, Any]:
        r = self.http.post("/v1/workers/claim", json={})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def report(self, job_id: str, what: str, body: dict[str, Any]) -> None:
        r = self.http.post(f"/v1/workers/jobs/{job_id}/{what}", json=body)
        assert r.status_code == 204, r.text


def test_quickstart_submit_status_and_lookup(client: NexaClient, live: LiveGateway) -> None:
    job = client.audit(dataset_uri=str(live.dataset()), labels={"team": "nlp"})
    assert job["job_id"].startswith("job_") and job.status is JobState.pending
    again = client.status(job["job_id"])
    assert again.job_id == job.job_id and again.labels == {"team": "nlp"}
    assert [e.kind for e in client.events(job.job_id)] == ["created"]
    assert client.get_job(job.job_id) == again


def test_resubmit_with_the_same_key_returns_the_same_job(client: NexaClient, live: LiveGateway) -> None:
    path = str(live.dataset())
    first = client.submit("audit", AuditSpec(dataset_uri=path), idempotency_key="sdk-once")
    second = client.submit("audit", {"dataset_uri": path}, idempotency_key="sdk-once")
    assert first.job_id == second.job_id
    with pytest.raises(ConflictError) as info:
        client.submit("audit", {"dataset_uri": path, "ngram": 3}, idempotency_key="sdk-once")
    assert info.value.error_type == "idempotency_conflict"
    # Without a key, every call is a new job.
    assert client.audit(path).job_id != client.audit(path).job_id


def test_list_filters_and_pages(live: LiveGateway) -> None:
    with NexaClient(live.new_key("lister"), live.url) as sdk:
        path = str(live.dataset())
        made = [sdk.audit(path, labels={"batch": "a" if i % 2 else "b"}).job_id for i in range(5)]
        assert [j.job_id for j in sdk.list_jobs(page_size=2)] == made[::-1]
        assert [j.job_id for j in sdk.list_jobs(labels={"batch": "a"}, page_size=1)] == [made[3], made[1]]
        assert [j.job_id for j in sdk.list_jobs(limit=3, page_size=2)] == made[:-4:-1]
        assert list(sdk.list_jobs(status="completed")) == []
        assert list(sdk.list_jobs(type="train")) == []


def test_cancel_then_wait_raises_cancelled(client: NexaClient, live: LiveGateway) -> None:
    job = client.audit(str(live.dataset()))
    assert job.cancel().status is JobState.cancelled
    assert client.cancel(job.job_id).status is JobState.cancelled  # a no-op the second time
    with pytest.raises(JobCancelledError) as info:
        client.wait(job.job_id, timeout=5)
    assert info.value.job.job_id == job.job_id
    assert list(client.logs(job.job_id)) == []  # a terminal job's stream ends at once


def test_errors_are_typed(client: NexaClient, live: LiveGateway) -> None:
    with pytest.raises(NotFoundError):
        client.status(UNKNOWN_JOB)
    theirs = client.audit(str(live.dataset())).job_id
    with NexaClient(live.new_key("someone-else"), live.url) as other, pytest.raises(NotFoundError):
        other.status(theirs)
    with NexaClient("nexa_" + "x" * 38, live.url) as stranger, pytest.raises(AuthenticationError):
        stranger.status(theirs)
    with pytest.raises(ValidationError) as info:
        client.submit("audit", {"ngram": 3})
    assert info.value.status_code == 422 and info.value.field == "dataset_uri"
    with pytest.raises(ValidationError) as info:
        client.audit(str(live.dataset()), resources={"gpus": -1})
    assert info.value.field == "resources.gpus"


def test_upload_dataset_and_audit_it(client: NexaClient, live: LiveGateway) -> None:
    dataset = client.upload_dataset(live.dataset("upload.jsonl", rows=4), name="my-data")
    assert dataset.dataset_id.startswith("ds_") and dataset.name == "my-data" and dataset.format == "jsonl"
    assert client.get_dataset(dataset.dataset_id) == dataset
    assert dataset.dataset_id in {d.dataset_id for d in client.list_datasets()}
    assert client.audit(dataset.dataset_id).status is JobState.pending


def _model_dir(root: Path, *extra: str) -> Path:
    """A model directory as save_pretrained writes one (the gateway checks files, it loads nothing)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (root / "tokenizer.json").write_text("{}")
    for name in extra:
        (root / name).write_bytes(b"\x80\x04pickled")
    return root


def test_a_local_model_directory_is_uploaded_as_the_tenants_checkpoint(
    client: NexaClient, live: LiveGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`model="./my-model"`: uploaded and sent as its ckpt_ id, never looked up on the hub by name."""
    work = live.root / "model-upload"
    # A pickled copy beside the safetensors weights is left out by the SDK (the gateway would refuse it).
    _model_dir(work / "my-model", "pytorch_model.bin")
    live.dataset("model-upload/train.jsonl")
    monkeypatch.chdir(work)
    job = client.train("./train.jsonl", model="./my-model", max_steps=1)
    checkpoint = job["spec"]["model"]
    assert checkpoint.startswith("ckpt_") and job["spec"]["dataset_id"].startswith("ds_")
    info = client.get_artifact(checkpoint)
    assert info.kind == "checkpoint" and info.manifest is not None
    assert sorted(f.path for f in info.manifest.files) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert info.manifest.signature  # signed by the platform on upload, as datasets are
    client.cancel(job["job_id"])
    # The checkpoint is the tenant's own: another tenant cannot name it.
    with NexaClient(live.new_key("rival"), live.url, max_retries=0) as rival:
        with pytest.raises(NexaError) as foreign:
            rival.train(str(live.dataset()), model=checkpoint)
        assert foreign.value.status_code in (404, 422)
        assert foreign.value.error_type in ("model_not_found", "not_found"), foreign.value


@pytest.mark.parametrize(
    ("files", "code"),
    [
        (("pytorch_model.bin",), "model_file_refused"),  # pickled weights run code when loaded
        (("modeling_evil.py",), "model_file_refused"),  # what trust_remote_code would import
        ((), "model_unreadable"),  # no config.json
    ],
)
def test_model_uploads_that_could_run_code_or_are_not_models_are_refused(
    client: NexaClient, live: LiveGateway, files: tuple[str, ...], code: str
) -> None:
    root = live.root / f"bad-model-{code}-{len(files)}"
    root.mkdir(parents=True, exist_ok=True)
    if files:
        (root / "config.json").write_text("{}")
    for name in files:
        (root / name).write_bytes(b"x")
    with pytest.raises(ValidationError) as refused:
        client.upload_model(root)
    assert refused.value.error_type == code and refused.value.status_code == 422


def test_a_model_archive_with_a_link_is_refused(client: NexaClient, live: LiveGateway) -> None:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("model.safetensors")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    response = httpx.post(
        f"{live.url}/v1/models",
        headers={"Authorization": f"Bearer {live.new_key('acme')}"},
        files={"file": ("m.tar", buffer.getvalue(), "application/x-tar")},
    )
    assert response.status_code == 422 and response.json()["error"]["type"] == "invalid_upload"


def test_worker_logs_stream_to_the_sdk_and_wait_returns(client: NexaClient, live: LiveGateway) -> None:
    # Top priority: other tests' pending jobs on this shared gateway must not be claimed first.
    job = client.audit(str(live.dataset()), priority=100)
    worker = Worker(live)
    claimed = worker.claim()
    assert claimed["job_id"] == job.job_id
    attempt = claimed["attempt"]
    follower = client.logs(job.job_id)  # follows a running job
    worker.report(job.job_id, "logs", {"attempt": attempt, "lines": ["loading", "scoring"]})
    assert [next(follower).line, next(follower).line] == ["loading", "scoring"]
    worker.report(job.job_id, "logs", {"attempt": attempt, "lines": ["done"]})
    worker.report(job.job_id, "complete", {"attempt": attempt, "result": {"score": 0.75}})
    assert [line.line for line in follower] == ["done"]  # and the stream ends with the job
    final = job.wait(timeout=10, poll_interval=0.05)
    assert final.status is JobState.completed and final.result == {"score": 0.75}
    resumed = list(client.logs(job.job_id, follow=False, last_event_id=1))
    assert [(ln.seq, ln.line) for ln in resumed] == [(2, "scoring"), (3, "done")]


def test_keys_lifecycle(live: LiveGateway) -> None:
    with NexaClient(live.new_key("keyed"), live.url) as sdk:
        created = sdk.create_key("ci")
        assert created.key.startswith("nexa_") and created.name == "ci"
        assert {k.key_id for k in sdk.list_keys()} >= {created.key_id}
        with NexaClient(created.key, live.url) as ci:
            assert list(ci.list_jobs()) == []
            assert sdk.revoke_key(created.key_id).revoked_at is not None
            with pytest.raises(AuthenticationError):
                list(ci.list_jobs())
        assert sdk.health()


@pytest.mark.anyio
async def test_async_client_same_flows(live: LiveGateway) -> None:
    transport = httpx.ASGITransport(app=live.app)
    async with AsyncNexaClient(live.new_key("async"), "http://gateway", transport=transport) as sdk:
        job = await sdk.audit(dataset_uri=str(live.dataset()))
        assert (await sdk.status(job["job_id"])).job_id == job.job_id
        again = await sdk.audit(str(live.dataset()), idempotency_key="async-once")
        assert (await sdk.audit(str(live.dataset()), idempotency_key="async-once")).job_id == again.job_id
        assert [j.job_id async for j in sdk.list_jobs(page_size=1)] == [again.job_id, job.job_id]
        await job.cancel()
        with pytest.raises(JobCancelledError):
            await job.wait(timeout=5)
        assert [line async for line in sdk.logs(job.job_id)] == []
        with pytest.raises(NotFoundError):
            await sdk.status(UNKNOWN_JOB)
        with pytest.raises(ValidationError) as info:
            await sdk.submit("audit", {})
        assert info.value.field == "dataset_uri"
        dataset = await sdk.upload_dataset(live.dataset("async.csv"), name="csv-ish")
        assert (await sdk.get_dataset(dataset.dataset_id)).name == "csv-ish"
    async with AsyncNexaClient("nexa_" + "y" * 38, "http://gateway", transport=transport) as stranger:
        with pytest.raises(AuthenticationError):
            await stranger.status(job.job_id)


def test_billing_summary_and_prices_through_both_clients(live: LiveGateway) -> None:
    import anyio

    key = live.new_key("billing-reader")
    with NexaClient(key, live.url, max_retries=0) as sdk:
        bill = sdk.billing_summary()
        assert bill.total == 0 and bill.total_cents == 0 and bill.price_book == "spec"
        assert bill.start.day == 1 and bill.start < bill.end  # this month so far
        assert sdk.price_book().name == "spec"
        dataset = sdk.upload_dataset(live.dataset("estimate.jsonl", rows=2000))
        guess = sdk.estimate("audit", {"dataset_uri": dataset.dataset_id})
        assert guess.complete and guess.total_cents == 40 and guess.lines[0].quantity == 2000
        assert sdk.budget().monthly_limit_cents is None  # no budget set: nothing refused for cost
        with pytest.raises(PaymentRequiredError) as capped:
            sdk.audit(dataset.dataset_id, max_cost_cents=1)
        assert capped.value.status_code == 402 and capped.value.error_type == "budget_exceeded"

    async def go() -> None:
        async with AsyncNexaClient(key, live.url, max_retries=0) as client:
            bill = await client.billing_summary(start=datetime(2025, 1, 1, tzinfo=UTC))
            assert bill.start == datetime(2025, 1, 1, tzinfo=UTC) and bill.total == 0

    anyio.run(go)
