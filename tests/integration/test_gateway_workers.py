"""The worker protocol against the real gateway: leases, fencing, retries, usage, log streaming."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from nexa.ids import new_id
from nexa_gateway.db import Job, Usage, utcnow
from tests.integration.gateway_app import WORKER_SECRET, Gateway, build_gateway


def _keyed(name: str, key: Any) -> dict[str, Any]:
    """A registration body for a node with ``key`` (a NodeKey), with its proof of holding it."""
    return {"name": name, "public_key": key.public_hex, "key_proof": key.key_proof().model_dump(mode="json")}


def _wait_status(gw: Gateway, job_id: str, wanted: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = gw.client.get(f"/v1/jobs/{job_id}", headers=gw.auth()).json()
        if job["status"] == wanted or time.monotonic() > deadline:
            assert job["status"] == wanted, job
            return dict(job)
        time.sleep(0.05)


def test_expired_lease_requeues_and_fences_the_old_worker(tmp_path: Path, db_url: str) -> None:
    # Leases long enough that attempt 2 never lapses on a loaded machine; attempt 1's is made to
    # lapse by hand (the test's hook), so the reaper's requeue is not a matter of timing.
    for gw in build_gateway(db_url, tmp_path / "gw", lease_seconds=120):
        job = gw.submit_audit(max_retries=2)
        old, new = gw.register_worker(), gw.register_worker()
        first = gw.claim(old)
        assert first is not None and first["attempt"] == 1
        # The old worker goes silent: its lease runs out, and the reaper puts the job back.
        state = gw.client.app.state.nexa  # type: ignore[attr-defined]
        with state.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.id == job["job_id"], Job.attempt == 1)
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
        requeued = _wait_status(gw, job["job_id"], "pending", timeout=60)
        assert requeued["attempts"] == 1
        assert "requeued" in [e["kind"] for e in requeued["events"]]
        second = gw.claim(new)
        assert second is not None and second["attempt"] == 2
        c = gw.client
        base = f"/v1/workers/jobs/{job['job_id']}"
        # Every late write from the old attempt is refused.
        for path, body in [
            ("heartbeat", {"attempt": 1}),
            ("progress", {"attempt": 1, "progress": 0.9}),
            ("logs", {"attempt": 1, "lines": ["late"]}),
            ("complete", {"attempt": 1, "result": {"from": "old"}}),
            ("fail", {"attempt": 1, "code": "x", "message": "late"}),
        ]:
            r = c.post(f"{base}/{path}", json=body, headers=old)
            assert r.status_code == 409 and r.json()["error"]["type"] == "stale_attempt", (path, r.text)
        # The new worker's attempt number is not enough for the old worker either.
        assert c.post(f"{base}/complete", json={"attempt": 2, "result": {}}, headers=old).status_code == 409
        ok = c.post(f"{base}/complete", json={"attempt": 2, "result": {"from": "new"}}, headers=new)
        assert ok.status_code == 204
        done = c.get(f"/v1/jobs/{job['job_id']}", headers=gw.auth()).json()
        assert done["status"] == "completed" and done["result"] == {"from": "new"} and done["attempts"] == 2
        assert done["progress_message"] == "completed (attempt 2)"


def test_a_job_that_always_loses_its_worker_fails_after_max_attempts(tmp_path: Path) -> None:
    for gw in build_gateway(f"sqlite:///{tmp_path / 'r8.db'}", tmp_path / "gw", lease_seconds=1):
        job = gw.submit_audit(max_retries=1)
        for attempt in (1, 2):
            claimed = gw.claim(gw.register_worker())
            assert claimed is not None and claimed["attempt"] == attempt
            if attempt == 1:
                _wait_status(gw, job["job_id"], "pending")
        failed = _wait_status(gw, job["job_id"], "failed")
        assert failed["error"]["code"] == "lease_expired"
        assert failed["attempts"] == 2
        assert gw.claim(gw.register_worker()) is None


def test_retryable_failure_requeues_then_fatal_failure_sticks(gateway: Gateway) -> None:
    job = gateway.submit_audit(max_retries=3)
    w = gateway.register_worker()
    base = f"/v1/workers/jobs/{job['job_id']}"
    assert gateway.claim(w) is not None
    r = gateway.client.post(
        f"{base}/fail",
        json={"attempt": 1, "code": "oom", "message": "out of memory", "retryable": True},
        headers=w,
    )
    assert r.status_code == 204
    requeued = gateway.client.get(f"/v1/jobs/{job['job_id']}", headers=gateway.auth()).json()
    assert requeued["status"] == "pending"
    assert requeued["progress_message"] == "attempt 1 failed (oom); waiting for attempt 2"
    assert gateway.claim(w) is not None
    r = gateway.client.post(
        f"{base}/fail", json={"attempt": 2, "code": "bad_data", "message": "column missing"}, headers=w
    )
    assert r.status_code == 204
    failed = gateway.client.get(f"/v1/jobs/{job['job_id']}", headers=gateway.auth()).json()
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "bad_data", "message": "column missing", "retryable": False}
    assert failed["progress_message"] == "failed: bad_data"  # how it ended, not the last word while running
    assert gateway.claim(w) is None


def test_cancel_while_running_tells_the_worker(gateway: Gateway) -> None:
    job = gateway.submit_audit()
    w = gateway.register_worker()
    assert gateway.claim(w) is not None
    base = f"/v1/workers/jobs/{job['job_id']}"
    assert (
        gateway.client.post(f"{base}/heartbeat", json={"attempt": 1}, headers=w).json()["cancel_requested"]
        is False
    )
    assert (
        gateway.client.post(f"/v1/jobs/{job['job_id']}/cancel", headers=gateway.auth()).json()["status"]
        == "cancelled"
    )
    assert (
        gateway.client.post(f"{base}/heartbeat", json={"attempt": 1}, headers=w).json()["cancel_requested"]
        is True
    )
    stopped = gateway.client.post(
        f"{base}/fail", json={"attempt": 1, "code": "cancelled", "message": "stopped"}, headers=w
    )
    assert stopped.status_code == 204
    late = gateway.client.post(f"{base}/complete", json={"attempt": 1, "result": {}}, headers=w)
    assert late.status_code == 409
    assert (
        gateway.client.get(f"/v1/jobs/{job['job_id']}", headers=gateway.auth()).json()["status"]
        == "cancelled"
    )


def test_usage_is_recorded_once_per_attempt(gateway: Gateway) -> None:
    job = gateway.submit_audit()
    w = gateway.register_worker()
    assert gateway.claim(w) is not None
    body = {
        "attempt": 1,
        "result": {},
        "usage": [{"kind": "rows", "amount": 10}, {"kind": "rows", "amount": 5}],
    }
    assert (
        gateway.client.post(f"/v1/workers/jobs/{job['job_id']}/complete", json=body, headers=w).status_code
        == 204
    )
    # A duplicate delivery of the same report is refused and bills nothing.
    assert (
        gateway.client.post(f"/v1/workers/jobs/{job['job_id']}/complete", json=body, headers=w).status_code
        == 409
    )
    state = gateway.client.app.state.nexa  # type: ignore[attr-defined]
    with state.db.session() as s:
        rows = s.execute(select(Usage.kind, func.sum(Usage.amount), func.count()).group_by(Usage.kind)).all()
    assert [(k, float(total), n) for k, total, n in rows] == [("rows", 15.0, 1)]


def test_an_attempt_lost_to_the_platform_is_not_charged_and_its_retry_is(gateway: Gateway) -> None:
    job = gateway.submit_audit(max_retries=2)
    w = gateway.register_worker()
    job_url = f"/v1/workers/jobs/{job['job_id']}"
    assert gateway.claim(w) is not None
    lost = {
        "attempt": 1,
        "code": "worker_shutdown",
        "message": "the worker was shut down while running this attempt",
        "retryable": True,
        "usage": [{"kind": "rows", "amount": 7}],
    }
    assert gateway.client.post(f"{job_url}/fail", json=lost, headers=w).status_code == 204
    claimed = gateway.claim(w)
    assert claimed is not None and claimed["attempt"] == 2
    done = {"attempt": 2, "result": {}, "usage": [{"kind": "rows", "amount": 10}]}
    assert gateway.client.post(f"{job_url}/complete", json=done, headers=w).status_code == 204
    state = gateway.client.app.state.nexa  # type: ignore[attr-defined]
    with state.db.session() as s:
        rows = s.execute(select(Usage.attempt, Usage.kind, Usage.amount)).all()
    assert [(a, k, float(v)) for a, k, v in rows] == [(2, "rows", 10.0)]


def test_claims_respect_hardware_priority_and_type(gateway: Gateway) -> None:
    cpu_job = gateway.submit_audit()
    gpu_job = gateway.submit_audit(resources={"gpus": 2, "gpu_type": "H100"})
    urgent = gateway.submit_audit(priority=50)
    cpu_worker = gateway.register_worker(cpu_count=2, memory_gb=4, gpus=0, tier="cpu")
    gpu_worker = gateway.register_worker(cpu_count=8, memory_gb=64, gpus=4, gpu_type="H100", tier="cpu")
    first = gateway.claim(cpu_worker)
    assert first is not None and first["job_id"] == urgent["job_id"]
    second = gateway.claim(cpu_worker)
    assert second is not None and second["job_id"] == cpu_job["job_id"]
    assert gateway.claim(cpu_worker) is None  # the GPU job never goes to a CPU box
    assert gateway.claim(gpu_worker, job_types=["train"]) is None
    third = gateway.claim(gpu_worker)
    assert third is not None and third["job_id"] == gpu_job["job_id"]


def test_concurrent_claims_never_hand_one_job_out_twice(gateway: Gateway) -> None:
    jobs = {gateway.submit_audit()["job_id"] for _ in range(30)}
    workers = [gateway.register_worker() for _ in range(6)]
    claimed: list[str] = []
    lock = threading.Lock()

    def drain(worker: dict[str, str]) -> None:
        while (job := gateway.claim(worker)) is not None:
            with lock:
                claimed.append(job["job_id"])

    with ThreadPoolExecutor(len(workers)) as pool:
        list(pool.map(drain, workers))
    assert sorted(claimed) == sorted(jobs)


def test_artifacts_of_a_superseded_attempt_are_never_promoted(gateway: Gateway) -> None:
    from nexa_store.local import LocalArtifactStore

    job = gateway.submit_audit()
    w = gateway.register_worker()
    claimed = gateway.claim(w)
    assert claimed is not None
    tenant = claimed["tenant_id"]
    store = LocalArtifactStore(gateway.root / "artifacts")
    ds = new_id("ds")
    writer = store.begin("dataset", ds)
    (writer.path / "data.jsonl").write_text('{"text": "x"}\n')
    writer.commit(job_id=job["job_id"], attempt=7, tenant_id=tenant, metrics={"num_rows": 1})
    base = f"/v1/workers/jobs/{job['job_id']}/complete"
    r = gateway.client.post(base, json={"attempt": 1, "result": {}, "artifacts": [ds]}, headers=w)
    assert r.status_code == 422 and r.json()["error"]["type"] == "artifact_foreign"
    assert gateway.client.get(f"/v1/artifacts/{ds}", headers=gateway.auth()).status_code == 404
    # Another tenant's artifact (right job and attempt, wrong tenant) is foreign too: never countersigned.
    theirs = new_id("ds")
    writer = store.begin("dataset", theirs)
    (writer.path / "data.jsonl").write_text('{"text": "x"}\n')
    writer.commit(job_id=job["job_id"], attempt=1, tenant_id="tnt_someoneelse", metrics={"num_rows": 1})
    r = gateway.client.post(base, json={"attempt": 1, "result": {}, "artifacts": [theirs]}, headers=w)
    assert r.status_code == 422 and r.json()["error"]["type"] == "artifact_foreign"
    assert store.read_manifest(theirs).signature is None
    good = new_id("ds")
    writer = store.begin("dataset", good)
    (writer.path / "data.jsonl").write_text('{"text": "x"}\n')
    writer.commit(
        job_id=job["job_id"], attempt=1, tenant_id=tenant, metrics={"num_rows": 1, "columns": ["text"]}
    )
    r = gateway.client.post(
        base, json={"attempt": 1, "result": {"dataset_id": good}, "artifacts": [good]}, headers=w
    )
    assert r.status_code == 204
    got = gateway.client.get(f"/v1/datasets/{good}", headers=gateway.auth()).json()
    assert got["num_rows"] == 1 and got["job_id"] == job["job_id"] and got["format"] == "jsonl"
    done = gateway.client.get(f"/v1/jobs/{job['job_id']}", headers=gateway.auth()).json()
    # artifacts_uri lists everything the job produced, through the API.
    assert done["artifacts_uri"] == f"/v1/artifacts?job_id={job['job_id']}"
    listed = gateway.client.get(done["artifacts_uri"], headers=gateway.auth()).json()
    assert [a["artifact_id"] for a in listed["items"]] == [good]


def _sse_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":")
        )
        if fields.get("event") == "log":
            out.append(json.loads(fields["data"]))
    return out


def test_log_stream_resumes_without_gap_or_duplicate(gateway: Gateway) -> None:
    job = gateway.submit_audit()
    w = gateway.register_worker()
    assert gateway.claim(w) is not None
    base = f"/v1/workers/jobs/{job['job_id']}"
    for batch in range(3):
        lines = [f"line {batch * 10 + i}" for i in range(10)]
        assert (
            gateway.client.post(f"{base}/logs", json={"attempt": 1, "lines": lines}, headers=w).status_code
            == 204
        )
    url = f"/v1/jobs/{job['job_id']}/logs"
    partial = gateway.client.get(url, params={"follow": "false"}, headers=gateway.auth())
    assert partial.headers["content-type"].startswith("text/event-stream")
    got = _sse_lines(partial.text)
    assert [g["seq"] for g in got] == list(range(1, 31))
    # A client that dropped after line 12 resumes at 13.
    resumed = gateway.client.get(
        url, headers={**gateway.auth(), "Last-Event-ID": "12"}, params={"follow": "false"}
    )
    assert [g["line"] for g in _sse_lines(resumed.text)] == [f"line {i}" for i in range(12, 30)]

    # Following: the stream ends by itself once the job ends, with every line and an end event.
    def finish() -> None:
        time.sleep(0.3)
        gateway.client.post(f"{base}/logs", json={"attempt": 1, "lines": ["last words"]}, headers=w)
        gateway.client.post(f"{base}/complete", json={"attempt": 1, "result": {}}, headers=w)

    threading.Thread(target=finish).start()
    followed = gateway.client.get(url, headers={**gateway.auth(), "Last-Event-ID": "29"})
    assert [g["line"] for g in _sse_lines(followed.text)] == ["line 29", "last words"]
    assert 'event: end\ndata: {"status": "completed"}' in followed.text


def test_a_finished_jobs_log_becomes_a_file_its_tenant_alone_can_download(gateway: Gateway) -> None:
    from nexa_gateway.services import logarchive

    state = gateway.client.app.state.nexa  # type: ignore[attr-defined]
    job = gateway.submit_audit()
    running = gateway.submit_audit()
    w = gateway.register_worker()
    assert gateway.claim(w) is not None
    base = f"/v1/workers/jobs/{job['job_id']}"
    lines = {"attempt": 1, "lines": ["reading rows", "scored 3 rows"]}
    assert gateway.client.post(f"{base}/logs", json=lines, headers=w).status_code == 204
    assert (
        gateway.client.post(f"{base}/complete", json={"attempt": 1, "result": {}}, headers=w).status_code
        == 204
    )
    assert _wait_status(gateway, job["job_id"], "completed")["logs_uri"] == f"/v1/jobs/{job['job_id']}/logs"

    # The archive task's tick, run here so the test does not wait on its timer; a second tick is a no-op.
    with state.db.session() as session:
        assert job["job_id"] in logarchive.archive_pending(session, state.store, grace_seconds=0)
    with state.db.session() as session:
        assert logarchive.archive_pending(session, state.store, grace_seconds=0) == []
    state.jobs.invalidate([job["job_id"]])
    done = gateway.client.get(f"/v1/jobs/{job['job_id']}", headers=gateway.auth()).json()
    log_id = logarchive.log_artifact_id(job["job_id"])
    assert done["logs_uri"] == f"internal://{log_id}/job.log"
    listed = gateway.client.get("/v1/jobs", headers=gateway.auth()).json()
    uris = {j["job_id"]: j["logs_uri"] for j in listed["items"]}
    assert uris[job["job_id"]] == done["logs_uri"]
    assert uris[running["job_id"]] == f"/v1/jobs/{running['job_id']}/logs"  # not finished: still the stream

    text = gateway.client.get(f"/v1/artifacts/{log_id}/files/job.log", headers=gateway.auth())
    assert text.status_code == 200, text.text
    assert [line.split(" ", 1)[1] for line in text.text.splitlines()] == [
        "[attempt 1] reading rows",
        "[attempt 1] scored 3 rows",
    ]
    # Signed like the gateway's other writes, and owned by the job's tenant only.
    manifest = state.store.read_manifest(log_id)
    assert manifest.tenant_id == done["user_id"] and manifest.signature is not None
    other = gateway.new_tenant_key("someone-else")
    assert (
        gateway.client.get(f"/v1/artifacts/{log_id}/files/job.log", headers=gateway.auth(other)).status_code
        == 404
    )


def test_claims_match_memory_cpu_and_disk_and_a_job_no_worker_fits_says_why(tmp_path: Path) -> None:
    for gw in build_gateway(
        f"sqlite:///{tmp_path / 'nexa.db'}", tmp_path / "gw", schedulability_interval_seconds=0.1
    ):
        huge = gw.submit_audit(resources={"memory_gb": 4000})
        big = gw.submit_audit(resources={"memory_gb": 48, "cpu": 8, "disk_gb": 100})
        small = gw.register_worker(cpu_count=4, memory_gb=16, disk_gb=500)
        large = gw.register_worker(cpu_count=16, memory_gb=64, disk_gb=50)
        # The matching is in the claim query: neither worker is handed what it cannot hold.
        assert gw.claim(small) is None
        assert gw.claim(large) is None  # memory and CPUs fit, its 50 GiB of disk does not
        roomy = gw.register_worker(cpu_count=16, memory_gb=64, disk_gb=1000)
        claimed = gw.claim(roomy)
        assert claimed is not None and claimed["job_id"] == big["job_id"]

        def job(job_id: str, gw: Gateway = gw) -> dict[str, Any]:
            return dict(gw.client.get(f"/v1/jobs/{job_id}", headers=gw.auth()).json())

        deadline = time.monotonic() + 60
        expected = "unschedulable: no connected worker has 4000 GiB of memory (the most any offers: 64 GiB)"
        while job(huge["job_id"])["progress_message"] != expected:
            assert time.monotonic() < deadline, job(huge["job_id"])
            time.sleep(0.1)
        seen = job(huge["job_id"])
        assert seen["status"] == "pending"
        assert [e["kind"] for e in seen["events"]].count("unschedulable") == 1
        # A node that fits joins: the job says it waits for it again, and that node gets it.
        giant = gw.register_worker(cpu_count=64, memory_gb=4096)
        while job(huge["job_id"])["progress_message"] != "waiting for a worker that fits":
            assert time.monotonic() < deadline, job(huge["job_id"])
            time.sleep(0.1)
        got = gw.claim(giant)
        assert got is not None and got["job_id"] == huge["job_id"]


def test_tiers_accept_nexapods_spellings() -> None:
    from nexa.contracts import HardwareProfile, Resources

    assert [Resources(tier=t).tier for t in ("CPU", "Consumer GPU", "HPC", 1, "consumer_gpu")] == [
        "cpu",
        "consumer-gpu",
        "hpc",
        "consumer-gpu",
        "consumer-gpu",
    ]
    assert HardwareProfile(tier="HPC").tier == "hpc"


def test_a_node_with_a_key_must_sign_its_reports_and_refusals_are_recorded(tmp_path: Path) -> None:
    from nexa.contracts import ResultReport
    from nexa_store.envelopes import NodeKey

    for gw in build_gateway(f"sqlite:///{tmp_path / 'nexa.db'}", tmp_path / "gw"):
        key = NodeKey.load_or_create(tmp_path / "node")
        registered = gw.client.post(
            "/v1/workers/register",
            json=_keyed("signing-node", key),
            headers={"Authorization": f"Bearer {WORKER_SECRET}"},
        )
        assert registered.status_code == 201, registered.text
        node = {"Authorization": f"Bearer {registered.json()['token']}"}
        worker_id = registered.json()["worker_id"]
        listed = gw.client.get(f"/v1/workers/{worker_id}", headers=gw.auth()).json()
        assert listed["public_key"] == key.public_hex
        job = gw.submit_audit()
        claimed = gw.claim(node)
        assert claimed is not None
        url = f"/v1/workers/jobs/{job['job_id']}/complete"
        report = ResultReport(attempt=claimed["attempt"], result={"ok": True}, usage=[])

        def send(
            envelope: Any, report: ResultReport = report, gw: Gateway = gw, url: str = url, node: Any = node
        ) -> Any:
            body = report.model_dump(mode="json") | {"envelope": envelope}
            return gw.client.post(url, json=body, headers=node)

        unsigned = send(None)
        assert unsigned.status_code == 422 and unsigned.json()["error"]["type"] == "report_signature_invalid"
        # A valid signature over another attempt (a replay) or another result (tampering) does not pass.
        replayed = key.sign("complete", job["job_id"], claimed["attempt"] + 1, worker_id, report)
        assert send(replayed.model_dump(mode="json")).status_code == 422
        tampered = key.sign(
            "complete", job["job_id"], claimed["attempt"], worker_id, report.model_copy(update={"result": {}})
        )
        assert send(tampered.model_dump(mode="json")).status_code == 422
        forger = NodeKey.load_or_create(tmp_path / "forger")
        forged = forger.sign("complete", job["job_id"], claimed["attempt"], worker_id, report)
        assert send(forged.model_dump(mode="json")).status_code == 422
        seen = gw.client.get(f"/v1/jobs/{job['job_id']}", headers=gw.auth()).json()
        assert seen["status"] == "running"  # nothing was accepted
        assert [e["kind"] for e in seen["events"]].count("report_refused") == 4
        assert "nexa_report_signatures_refused_total 4.0" in gw.client.get("/metrics").text
        good = key.sign("complete", job["job_id"], claimed["attempt"], worker_id, report)
        assert send(good.model_dump(mode="json")).status_code == 204
        assert gw.client.get(f"/v1/jobs/{job['job_id']}", headers=gw.auth()).json()["status"] == "completed"

    for gw in build_gateway(
        f"sqlite:///{tmp_path / 'strict.db'}", tmp_path / "strict", require_node_signatures=True
    ):
        keyless = gw.client.post(
            "/v1/workers/register",
            json={"name": "old-node"},
            headers={"Authorization": f"Bearer {WORKER_SECRET}"},
        )
        assert keyless.status_code == 422 and keyless.json()["error"]["field"] == "public_key"


def test_an_admin_drains_resumes_and_revokes_a_node(gateway: Gateway, tmp_path: Path) -> None:
    from nexa_store.envelopes import NodeKey

    gw = gateway
    key = NodeKey.load_or_create(tmp_path / "node-a")
    body = _keyed("node-a", key)
    secret = {"Authorization": f"Bearer {WORKER_SECRET}"}
    registered = gw.client.post("/v1/workers/register", json=body, headers=secret).json()
    a, a_id = {"Authorization": f"Bearer {registered['token']}"}, registered["worker_id"]
    b = gw.register_worker()
    jobs = [gw.submit_audit(max_retries=2)["job_id"] for _ in range(3)]

    def act(action: str, worker_id: str = a_id, key: str | None = None) -> Any:
        return gw.client.post(
            f"/v1/workers/{worker_id}/{action}", json={"reason": "maintenance"}, headers=gw.auth(key)
        )

    first = gw.claim(a)
    assert first is not None and first["job_id"] == jobs[0]
    drained = act("drain")
    assert drained.status_code == 200 and drained.json()["state"] == "draining"
    assert gw.claim(a) is None  # claims nothing new...
    beat = gw.client.post(f"/v1/workers/jobs/{jobs[0]}/heartbeat", json={"attempt": 1}, headers=a)
    assert beat.status_code == 200  # ...and keeps what it runs
    second = gw.claim(b)
    assert second is not None and second["job_id"] == jobs[1]
    assert act("resume").json()["state"] == "busy"
    third = gw.claim(a)
    assert third is not None and third["job_id"] == jobs[2]

    # Another tenant's admin cannot touch a node it cannot see.
    other = gw.new_tenant_key("elsewhere")
    assert act("drain", key=other).status_code == 404

    revoked = act("revoke")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    beat = gw.client.post(f"/v1/workers/jobs/{jobs[0]}/heartbeat", json={"attempt": 1}, headers=a)
    assert beat.status_code == 401  # refused on every route
    assert gw.client.post("/v1/workers/claim", json={}, headers=a).status_code == 401
    for job_id in (jobs[0], jobs[2]):  # its attempts went back to the queue, for others to run
        job = gw.client.get(f"/v1/jobs/{job_id}", headers=gw.auth()).json()
        assert job["status"] == "pending", job
        assert any("was revoked" in e["message"] for e in job["events"])
    again = gw.claim(b)
    assert again is not None and again["job_id"] == jobs[0] and again["attempt"] == 2
    # Its key cannot come back under a new registration, and a revocation is final.
    back = gw.client.post("/v1/workers/register", json=body, headers=secret)
    assert back.status_code == 403 and back.json()["error"]["type"] == "node_revoked"
    assert act("resume").status_code == 409
    listed = {
        w["worker_id"]: w["state"] for w in gw.client.get("/v1/workers", headers=gw.auth()).json()["items"]
    }
    assert listed[a_id] == "revoked"

    # No one registers a key they do not hold: without a proof, or with a proof by another key, the
    # victim's public key is refused; the victim itself registers it.
    mallory = gw.new_tenant_key("mallory")
    victim = NodeKey.load_or_create(tmp_path / "victim")
    token = gw.client.post("/v1/nodes/tokens", json={"name": "m"}, headers=gw.auth(mallory)).json()["token"]
    as_mallory = {"Authorization": f"Bearer {token}"}
    squat = {"name": "squatter", "public_key": victim.public_hex}
    taken = gw.client.post("/v1/workers/register", json=squat, headers=as_mallory)
    assert taken.status_code == 422 and taken.json()["error"]["type"] == "key_proof_invalid"
    forged = squat | {
        "key_proof": NodeKey.load_or_create(tmp_path / "mallory").key_proof().model_dump(mode="json")
    }
    assert gw.client.post("/v1/workers/register", json=forged, headers=as_mallory).status_code == 422
    own = _keyed("victim", victim)
    assert gw.client.post("/v1/workers/register", json=own, headers=secret).status_code == 201


def test_a_revoked_nodes_deployment_gets_no_more_traffic(sqlite_gateway: Gateway) -> None:
    """Callers' requests (and the keys they carry) never reach a server on a node an admin cut off."""
    from nexa.ids import new_id
    from nexa_gateway.db import Artifact, Job
    from nexa_store.serving import DEPLOYMENT_FILE

    gw = sqlite_gateway
    node = gw.register_worker()
    worker_id = gw.client.get("/v1/workers", headers=gw.auth()).json()["items"][0]["worker_id"]
    state = gw.client.app.state.nexa  # type: ignore[attr-defined]
    tenant = gw.client.get("/v1/billing/budget", headers=gw.auth()).json()["tenant_id"]
    job_id, deployment_id = new_id("job"), new_id("dp")
    with state.store.begin("deployment", deployment_id) as writer:
        record = {"started_at": utcnow().isoformat(), "url": "http://127.0.0.1:9"}  # nothing listens there
        (writer.path / DEPLOYMENT_FILE).write_text(json.dumps(record))
        writer.commit(tenant_id=tenant, job_id=job_id, attempt=1)
    with state.db.session() as session:
        session.add(
            Job(
                id=job_id,
                tenant_id=tenant,
                job_type="deploy",
                status="completed",
                spec={},
                spec_hash="x",
                attempt=1,
                worker_id=worker_id,
            )
        )
        session.add(Artifact(id=deployment_id, tenant_id=tenant, kind="deployment", uri="u", job_id=job_id))
    url = f"/v1/inference/{deployment_id}/v1/models"
    assert gw.client.get(url, headers=gw.auth()).status_code == 502  # forwarded (and unanswered)
    assert node and gw.client.post(f"/v1/workers/{worker_id}/revoke", json={}, headers=gw.auth()).is_success
    refused = gw.client.get(url, headers=gw.auth())
    assert refused.status_code == 404 and "revoked" in refused.json()["error"]["message"]


def test_a_keyed_nodes_logs_and_manifests_are_signed_and_batches_count_once(
    sqlite_gateway: Gateway, tmp_path: Path
) -> None:
    from nexa.contracts import LogLines, ResultReport
    from nexa_store.envelopes import NodeKey, manifest_digest
    from nexa_store.local import LocalArtifactStore

    gw = sqlite_gateway
    key = NodeKey.load_or_create(tmp_path / "node")
    registered = gw.client.post(
        "/v1/workers/register",
        json=_keyed("signing-node", key),
        headers={"Authorization": f"Bearer {WORKER_SECRET}"},
    )
    node = {"Authorization": f"Bearer {registered.json()['token']}"}
    worker_id = registered.json()["worker_id"]
    job = gw.submit_audit()
    claimed = gw.claim(node)
    assert claimed is not None
    attempt, job_id = claimed["attempt"], job["job_id"]
    logs_url = f"/v1/workers/jobs/{job_id}/logs"

    def post_logs(batch: LogLines, signed: bool = True, gw: Gateway = gw) -> Any:
        body = batch.model_dump(mode="json")
        if signed:
            body["envelope"] = key.sign("logs", job_id, attempt, worker_id, batch).model_dump(mode="json")
        return gw.client.post(logs_url, json=body, headers=node)

    first = LogLines(attempt=attempt, lines=["loading", "scoring"], seq=1)
    assert post_logs(first, signed=False).status_code == 422  # unsigned from a keyed node
    unnumbered = post_logs(LogLines(attempt=attempt, lines=["x"]))
    assert unnumbered.status_code == 422 and "seq" in unnumbered.json()["error"]["message"]
    assert post_logs(first).status_code == 204
    assert post_logs(first).status_code == 204  # a retry: appended once
    reused = post_logs(LogLines(attempt=attempt, lines=["something else"], seq=1))
    assert reused.status_code == 409 and reused.json()["error"]["type"] == "log_batch_reused"
    # A batch signed for another job does not pass here.
    other = LogLines(attempt=attempt, lines=["elsewhere"], seq=2)
    moved = other.model_dump(mode="json") | {
        "envelope": key.sign("logs", "job_" + "a" * 26, attempt, worker_id, other).model_dump(mode="json")
    }
    assert gw.client.post(logs_url, json=moved, headers=node).status_code == 422
    lines = [
        e["line"]
        for e in _sse_lines(gw.client.get(f"/v1/jobs/{job_id}/logs?follow=false", headers=gw.auth()).text)
    ]
    assert lines.count("loading") == 1 and "something else" not in lines and "elsewhere" not in lines

    # The signed result names each manifest's digest; the store must hold exactly that manifest.
    store = LocalArtifactStore(gw.root / "artifacts")
    ds = new_id("ds")
    writer = store.begin("dataset", ds)
    (writer.path / "data.jsonl").write_text('{"text": "x"}\n')
    writer.commit(job_id=job_id, attempt=attempt, tenant_id=claimed["tenant_id"], metrics={"num_rows": 1})
    url = f"/v1/workers/jobs/{job_id}/complete"

    def complete(report: ResultReport, gw: Gateway = gw) -> Any:
        envelope = key.sign("complete", job_id, attempt, worker_id, report).model_dump(mode="json")
        return gw.client.post(url, json=report.model_dump(mode="json") | {"envelope": envelope}, headers=node)

    unnamed = complete(ResultReport(attempt=attempt, result={}, artifacts=[ds]))
    assert unnamed.status_code == 422 and "manifest" in unnamed.json()["error"]["message"]
    wrong = complete(ResultReport(attempt=attempt, result={}, artifacts=[ds], manifests={ds: "0" * 64}))
    assert wrong.status_code == 422 and wrong.json()["error"]["type"] == "manifest_mismatch"
    digest = manifest_digest(store.read_manifest(ds))
    good = complete(ResultReport(attempt=attempt, result={}, artifacts=[ds], manifests={ds: digest}))
    assert good.status_code == 204, good.text
    assert gw.client.get(f"/v1/jobs/{job_id}", headers=gw.auth()).json()["status"] == "completed"
