"""Jobs through the real gateway on SQLite and PostgreSQL: submit, idempotency, list, cancel, bad input."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.gateway_app import Gateway


def test_submit_and_status_on_v1_and_spec_paths(gateway: Gateway) -> None:
    job = gateway.submit_audit(labels={"team": "nlp"})
    assert job["job_id"].startswith("job_") and job["status"] == "pending" and job["job_type"] == "audit"
    assert job["logs_uri"] == f"/v1/jobs/{job['job_id']}/logs"
    for path in (f"/v1/jobs/{job['job_id']}", f"/status/{job['job_id']}"):
        got = gateway.client.get(path, headers=gateway.auth()).json()
        assert got["job_id"] == job["job_id"]
        assert got["labels"] == {"team": "nlp"}
        assert [e["kind"] for e in got["events"]] == ["created"]
    spec = gateway.client.post(
        "/audit", json={"dataset_uri": str(gateway.dataset_file())}, headers=gateway.auth()
    )
    assert spec.status_code == 201 and spec.json()["status"] == "pending"


def test_idempotency_key_returns_the_same_job(gateway: Gateway) -> None:
    path = str(gateway.dataset_file())
    first = gateway.client.post(
        "/v1/audit", json={"dataset_uri": path}, headers={**gateway.auth(), "Idempotency-Key": "k1"}
    )
    again = gateway.client.post(
        "/v1/audit", json={"dataset_uri": path}, headers={**gateway.auth(), "Idempotency-Key": "k1"}
    )
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["job_id"] == again.json()["job_id"]
    changed = gateway.client.post(
        "/v1/audit",
        json={"dataset_uri": path, "ngram": 3},
        headers={**gateway.auth(), "Idempotency-Key": "k1"},
    )
    assert changed.status_code == 409 and changed.json()["error"]["type"] == "idempotency_conflict"
    listed = gateway.client.get("/v1/jobs", headers=gateway.auth()).json()["items"]
    assert len(listed) == 1


def test_concurrent_repeats_create_one_job(gateway: Gateway) -> None:
    path = str(gateway.dataset_file())

    def post(_: int) -> str:
        r = gateway.client.post(
            "/v1/audit", json={"dataset_uri": path, "idempotency_key": "same"}, headers=gateway.auth()
        )
        assert r.status_code in (200, 201), r.text
        return str(r.json()["job_id"])

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(post, range(16)))
    assert len(ids) == 1
    assert len(gateway.client.get("/v1/jobs", headers=gateway.auth()).json()["items"]) == 1


def test_list_filters_and_cursor_pagination(gateway: Gateway) -> None:
    made = [gateway.submit_audit(labels={"batch": "a" if i % 2 else "b"})["job_id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = gateway.client.get("/v1/jobs", params=params, headers=gateway.auth()).json()
        seen += [j["job_id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))
    only_a = gateway.client.get("/v1/jobs", params={"label": "batch=a"}, headers=gateway.auth()).json()[
        "items"
    ]
    assert {j["job_id"] for j in only_a} == {made[i] for i in range(7) if i % 2}
    by_state = gateway.client.get("/v1/jobs", params={"status": "completed"}, headers=gateway.auth()).json()
    assert by_state["items"] == []
    by_type = gateway.client.get("/v1/jobs", params={"type": "train"}, headers=gateway.auth()).json()
    assert by_type["items"] == []


def test_cancel_pending_is_idempotent_and_finished_jobs_refuse(gateway: Gateway) -> None:
    job = gateway.submit_audit()
    url = f"/v1/jobs/{job['job_id']}/cancel"
    first = gateway.client.post(url, headers=gateway.auth())
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    assert gateway.client.post(url, headers=gateway.auth()).json()["status"] == "cancelled"
    worker = gateway.register_worker()
    assert gateway.claim(worker) is None  # a cancelled job is never handed out
    done = gateway.submit_audit()
    claimed = gateway.claim(worker)
    assert claimed is not None and claimed["job_id"] == done["job_id"]
    r = gateway.client.post(
        f"/v1/workers/jobs/{done['job_id']}/complete", json={"attempt": 1, "result": {}}, headers=worker
    )
    assert r.status_code == 204
    refused = gateway.client.post(f"/v1/jobs/{done['job_id']}/cancel", headers=gateway.auth())
    assert refused.status_code == 409 and refused.json()["error"]["type"] == "job_finished"


@pytest.mark.parametrize(
    ("body", "status", "error_type", "field"),
    [
        ({}, 422, "validation_error", "dataset_uri"),
        ({"dataset_uri": "/etc/hostname"}, 422, "dataset_not_allowed", "dataset_uri"),
        ({"dataset_uri": "ds_aaaaaaaaaaaaaaaaaaaaaaaaaa"}, 422, "dataset_not_found", "dataset_uri"),
        ({"dataset_uri": "http://example.com/x.parquet"}, 422, "invalid_dataset_uri", "dataset_uri"),
        ({"dataset_uri": "x", "ngram": 0}, 422, "validation_error", "ngram"),
        ({"dataset_uri": "x", "surprise": 1}, 422, "validation_error", "surprise"),
        ({"dataset_uri": "x", "resources": {"gpus": -1}}, 422, "validation_error", "resources.gpus"),
    ],
)
def test_bad_submissions_name_the_field(
    sqlite_gateway: Gateway, body: dict[str, object], status: int, error_type: str, field: str
) -> None:
    r = sqlite_gateway.client.post("/v1/audit", json=body, headers=sqlite_gateway.auth())
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == error_type
    assert error["field"] == field


def test_missing_local_file_and_missing_checkpoint(sqlite_gateway: Gateway) -> None:
    gone = sqlite_gateway.root / "nope.parquet"
    r = sqlite_gateway.client.post(
        "/v1/audit", json={"dataset_uri": str(gone)}, headers=sqlite_gateway.auth()
    )
    assert r.status_code == 422 and r.json()["error"]["type"] == "dataset_not_found"
    r = sqlite_gateway.client.post(
        "/v1/evaluate",
        json={"checkpoint_id": "ckpt_aaaaaaaaaaaaaaaaaaaaaaaaaa"},
        headers=sqlite_gateway.auth(),
    )
    assert r.status_code == 422 and r.json()["error"] == {
        "type": "checkpoint_not_found",
        "message": "checkpoint ckpt_aaaaaaaaaaaaaaaaaaaaaaaaaa not found",
        "field": "checkpoint_id",
    }


def test_malformed_requests_are_clear_4xx(sqlite_gateway: Gateway) -> None:
    c, h = sqlite_gateway.client, sqlite_gateway.auth()
    bad_json = c.post("/v1/audit", content=b"{nope", headers={**h, "content-type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "bad_request"
    assert c.post("/v1/teleport", json={}, headers=h).status_code == 404
    assert c.get("/v1/jobs/../../etc/passwd", headers=h).status_code == 404
    assert c.get("/v1/jobs/not-an-id", headers=h).json()["error"]["type"] == "not_found"
    assert c.get("/v1/jobs", params={"cursor": "garbage!!"}, headers=h).status_code == 400
    assert c.get("/v1/jobs", params={"label": "noequals"}, headers=h).status_code == 422
    assert c.get("/v1/jobs", params={"status": "sleeping"}, headers=h).json()["error"]["field"] == "status"
    stream = c.get("/v1/jobs/job_aaaaaaaaaaaaaaaaaaaaaaaaaa/logs", headers={**h, "Last-Event-ID": "x"})
    assert stream.status_code == 400


def test_metrics_and_health(sqlite_gateway: Gateway) -> None:
    sqlite_gateway.submit_audit()
    assert sqlite_gateway.client.get("/healthz").json() == {"status": "ok"}
    ready = sqlite_gateway.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["database"] == "sqlite"
    text = sqlite_gateway.client.get("/metrics").text
    assert 'nexa_jobs_submitted_total{type="audit"} 1.0' in text
    assert 'nexa_jobs{status="pending",type="audit"} 1.0' in text
    assert 'nexa_http_requests_total{method="POST",route="/v1/audit",status="201"}' in text
