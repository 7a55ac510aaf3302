"""Storage billing against the real gateway: stored bytes metered once per tenant and hour, deletion
with what depends on it shown first (and refused while it is needed), finished jobs deleted with their
bill unchanged, and retention expiring what nothing needs. The ledger verifies after all of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from nexa.contracts import ArtifactDependents, Deletion, InputSource
from nexa.contracts.billing import BillingSummary
from nexa.ids import new_id
from tests.integration.gateway_app import Gateway, build_gateway

pytestmark = pytest.mark.integration

GB = 10**9


@pytest.fixture
def forge_gateway(db_url: str, tmp_path: Path) -> Iterator[Gateway]:
    """Forge's prices ($0.02 per GB-month); the storage loop off: each test meters with its own clock."""
    yield from build_gateway(db_url, tmp_path / "gw", price_book="forge", storage_meter_interval_seconds=0)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    """The same on SQLite only, for the deletion rules."""
    yield from build_gateway(
        f"sqlite:///{tmp_path / 'n.db'}",
        tmp_path / "gw",
        price_book="forge",
        storage_meter_interval_seconds=0,
    )


def _state(gw: Gateway) -> Any:
    return gw.client.app.state.nexa  # type: ignore[attr-defined]


def _upload(gw: Gateway, key: str | None = None, rows: int = 3) -> str:
    data = "".join(f'{{"text": "row {i}"}}\n' for i in range(rows)).encode()
    r = gw.client.post("/v1/datasets", files={"file": ("d.jsonl", data)}, headers=gw.auth(key))
    assert r.status_code == 201, r.text
    return str(r.json()["dataset_id"])


def _set(gw: Gateway, artifact_id: str, **values: Any) -> None:
    """Change a registry row: the size the bill counts, or the registration time retention reads."""
    from nexa_gateway.db import Artifact

    with _state(gw).db.session() as session:
        session.execute(update(Artifact).where(Artifact.id == artifact_id).values(**values))


def _summary(gw: Gateway, key: str | None = None) -> BillingSummary:
    r = gw.client.get("/v1/billing/summary", headers=gw.auth(key))
    assert r.status_code == 200, r.text
    return BillingSummary.model_validate(r.json())


def _verify(gw: Gateway, tenant: str = "default") -> dict[str, Any]:
    r = gw.client.get(f"/v1/admin/tenants/{tenant}/ledger/verify", headers=gw.auth())
    assert r.status_code == 200, r.text
    return dict(r.json())


def _made_from(
    gw: Gateway, source: str, *, usage: dict[str, float] | None = None, deployment: bool = False
) -> tuple[str, str]:
    """A job reading ``source`` (an audit of a dataset, a deploy of a checkpoint) that wrote a checkpoint
    (or a deployment record) naming it as its input: (job id, output id)."""
    if source.startswith("ds_"):
        r = gw.client.post("/v1/audit", json={"dataset_uri": source}, headers=gw.auth())
    else:
        r = gw.client.post("/v1/deploy", json={"checkpoint_id": source}, headers=gw.auth())
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]
    worker = gw.register_worker()
    claimed = gw.claim(worker)
    assert claimed is not None and claimed["job_id"] == job_id
    checkpoint = new_id("dp") if deployment else new_id("ckpt")
    with _state(gw).store.begin("deployment" if deployment else "checkpoint", checkpoint) as writer:
        if deployment:
            started = (datetime.now(UTC) - timedelta(hours=73)).isoformat()  # a tenth of a month
            (writer.path / "deployment.json").write_text(json.dumps({"started_at": started}))
        else:
            (writer.path / "adapter.safetensors").write_bytes(b"\0" * 64)
        writer.commit(
            job_id=job_id,
            attempt=claimed["attempt"],
            tenant_id=claimed["tenant_id"],
            inputs=[InputSource(uri=f"internal://{source}", artifact_id=source)],
        )
    body = {
        "attempt": claimed["attempt"],
        "result": {},
        "artifacts": [checkpoint],
        "usage": [{"kind": k, "amount": v} for k, v in (usage or {}).items()],
    }
    r = gw.client.post(f"/v1/workers/jobs/{job_id}/complete", json=body, headers=worker)
    assert r.status_code == 204, r.text
    return job_id, checkpoint


def test_storage_is_metered_once_per_tenant_and_hour_and_stops_at_deletion(forge_gateway: Gateway) -> None:
    from nexa_gateway.services.storagemeter import meter_storage, storage_subject
    from nexa_gateway.services.stripesync import meter_event

    gw, state = forge_gateway, _state(forge_gateway)
    big, small = _upload(gw), _upload(gw)
    # The registry's size is what is billed: 73 GB and 36.5 GB, a tenth and a twentieth of a
    # GB-month each hour (730 hours a month).
    _set(gw, big, size_bytes=73 * GB)
    _set(gw, small, size_bytes=36_500_000_000)
    other = gw.new_tenant_key("other-tenant")
    theirs = _upload(gw, other)
    _set(gw, theirs, size_bytes=730 * GB)
    tenant = _summary(gw).tenant_id
    first = datetime.now(UTC).replace(minute=17, second=0, microsecond=0)
    second = first + timedelta(hours=1)

    with state.db.session() as session:
        metered = meter_storage(session, first)
        assert metered[tenant] == pytest.approx(0.15) and len(metered) == 2
        assert meter_storage(session, first + timedelta(minutes=40)) == {}  # the same hour: nothing more
    r = gw.client.delete(f"/v1/artifacts/{big}", headers=gw.auth())
    assert r.status_code == 200, r.text
    done = Deletion.model_validate(r.json())
    assert [d.artifact_id for d in done.deleted] == [big] and done.bytes_freed == 73 * GB
    with state.db.session() as session:
        assert meter_storage(session, second)[tenant] == pytest.approx(0.05)  # the deleted one is not counted
        assert meter_storage(session, second) == {}

    bill = _summary(gw)
    # $0.02 per GB-month: 0.15 then 0.05 GB-months is $0.003 + $0.001.
    assert bill.by_job_type == {"storage": Decimal("0.004")}
    assert bill.usage == {"storage_gb_months": Decimal("0.2")}
    (month,) = bill.by_job
    assert month.job_id == storage_subject(tenant, first.strftime("%Y%m")) and len(month.job_id) <= 40
    assert [line.quantity for line in month.lines] == [Decimal("0.15"), Decimal("0.05")]
    assert month.lines[0].label == "storage, per GB-month"
    # The other tenant pays for its own bytes only: 1 GB-month an hour, two hours.
    assert _summary(gw, other).total == Decimal("0.04")
    # Stripe gets MB-months, whole numbers.
    assert meter_event("storage_gb_months", 0.15) == ("nexa_storage_mb_months", 150)
    # Usage rows, the deletion and the metering subjects all verify in the tenant's chain.
    verified = _verify(gw)
    assert verified["ok"] is True and verified["entries"] == 3, verified  # 2 usage rows, 1 deletion


def test_what_depends_on_an_artifact_is_shown_and_refuses_its_deletion(gw: Gateway) -> None:
    from nexa_gateway.db import ArtifactInput, LedgerEntry

    state = _state(gw)
    dataset = _upload(gw)
    job_id, checkpoint = _made_from(gw, dataset)
    # An unfinished job reading the dataset blocks its deletion, even forced.
    pending = gw.client.post("/v1/audit", json={"dataset_uri": dataset}, headers=gw.auth()).json()["job_id"]
    found = ArtifactDependents.model_validate(
        gw.client.get(f"/v1/artifacts/{dataset}/dependents", headers=gw.auth()).json()
    )
    assert [(d.kind, d.id, d.blocking) for d in found.dependents] == [
        ("job", pending, True),
        ("artifact", checkpoint, False),
    ]
    assert not found.deletable and not found.deletable_with_force
    for force in ("false", "true"):
        refused = gw.client.delete(f"/v1/datasets/{dataset}", params={"force": force}, headers=gw.auth())
        assert refused.status_code == 409 and refused.json()["error"]["type"] == "artifact_in_use"
        assert pending in refused.json()["error"]["message"]
    assert gw.client.post(f"/v1/jobs/{pending}/cancel", headers=gw.auth()).status_code == 200

    # Now only the checkpoint made from it: a plain delete names it, force deletes past it.
    refused = gw.client.delete(f"/v1/datasets/{dataset}", headers=gw.auth())
    assert refused.status_code == 409 and checkpoint in refused.json()["error"]["message"]
    assert refused.json()["error"]["errors"] == [
        {
            "field": dataset,
            "dependent": checkpoint,
            "kind": "artifact",
            "message": "checkpoint made from it",
            "blocking": "false",
        }
    ]
    # Another tenant cannot see or delete it: 404, exactly as for an id that does not exist.
    other = gw.new_tenant_key("someone-else")
    unknown = new_id("ds")
    for path in ("/v1/artifacts/{}/dependents", "/v1/artifacts/{}", "/v1/datasets/{}"):
        method = gw.client.get if path.endswith("dependents") else gw.client.delete
        theirs, nobodys = (method(path.format(x), headers=gw.auth(other)) for x in (dataset, unknown))
        assert theirs.status_code == nobodys.status_code == 404
        assert theirs.json()["error"]["type"] == nobodys.json()["error"]["type"] == "not_found"
    # A dataset route deletes datasets only.
    assert gw.client.delete(f"/v1/datasets/{checkpoint}", headers=gw.auth()).status_code == 404

    forced = gw.client.delete(f"/v1/datasets/{dataset}", params={"force": "true"}, headers=gw.auth())
    assert forced.status_code == 200, forced.text
    done = Deletion.model_validate(forced.json())
    assert [d.artifact_id for d in done.deleted] == [dataset] and done.left_dependents[0].id == checkpoint
    assert not state.store.exists(dataset)
    assert gw.client.get(f"/v1/datasets/{dataset}", headers=gw.auth()).status_code == 404
    assert gw.client.get(f"/v1/artifacts/{checkpoint}", headers=gw.auth()).status_code == 200
    with state.db.session() as session:
        assert session.scalars(select(ArtifactInput)).all() == []
        entry = session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "artifact_deleted")).one()
        assert entry.subject == dataset and entry.payload["reason"] == "requested"
        assert entry.payload["left_dependents"] == [checkpoint]
    assert _verify(gw)["ok"] is True
    assert job_id  # the job that made the checkpoint stays: deleting an input never deletes a job


def test_deleting_a_finished_job_keeps_its_bill_and_removes_its_outputs(gw: Gateway) -> None:
    from nexa_gateway.db import Job, JobEvent, JobLog, UsageSubject

    state = _state(gw)
    dataset = _upload(gw)
    job_id, checkpoint = _made_from(gw, dataset, usage={"gpu_hours": 2, "prompt_tokens": 1000})
    second_job, derived = _made_from(gw, checkpoint, usage={"gpu_hours": 1})
    with state.db.session() as session:
        session.add(JobLog(job_id=job_id, seq=1, attempt=1, line="hello"))
    before = _summary(gw)
    assert before.total == Decimal("7.51")  # 3 GPU-hours at $2.50, 1,000 input tokens at $10 per 1M

    running = gw.client.post("/v1/audit", json={"dataset_uri": dataset}, headers=gw.auth()).json()["job_id"]
    refused = gw.client.delete(f"/v1/jobs/{running}", headers=gw.auth())
    assert refused.status_code == 409 and refused.json()["error"]["type"] == "job_not_finished"
    gw.client.post(f"/v1/jobs/{running}/cancel", headers=gw.auth())
    # Its checkpoint was made into another artifact: named, and deleted past only with force.
    refused = gw.client.delete(f"/v1/jobs/{job_id}", headers=gw.auth())
    assert refused.status_code == 409 and derived in refused.json()["error"]["message"]
    r = gw.client.delete(f"/v1/jobs/{job_id}", params={"force": "true"}, headers=gw.auth())
    assert r.status_code == 200, r.text
    done = Deletion.model_validate(r.json())
    assert done.job_id == job_id and [d.artifact_id for d in done.deleted] == [checkpoint]
    assert [d.id for d in done.left_dependents] == [derived]

    assert gw.client.get(f"/v1/jobs/{job_id}", headers=gw.auth()).status_code == 404
    assert gw.client.get(f"/v1/artifacts/{checkpoint}", headers=gw.auth()).status_code == 404
    assert not state.store.exists(checkpoint)
    with state.db.session() as session:
        assert session.get(Job, job_id) is None
        assert session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)).all() == []
        assert session.scalars(select(JobLog).where(JobLog.job_id == job_id)).all() == []
        subject = session.get(UsageSubject, job_id)
        assert subject is not None and subject.job_type == "audit"
    after = _summary(gw)
    assert after.model_dump(exclude={"start", "end"}) == before.model_dump(exclude={"start", "end"})
    assert _verify(gw)["ok"] is True
    # The second job's output and the dataset stay; a job id again is 404, as for any unknown job.
    assert gw.client.delete(f"/v1/jobs/{job_id}", headers=gw.auth()).status_code == 404
    assert gw.client.get(f"/v1/jobs/{second_job}", headers=gw.auth()).status_code == 200


def test_retention_expires_old_artifacts_that_nothing_needs(tmp_path: Path) -> None:
    from nexa_gateway.db import LedgerEntry
    from nexa_gateway.services import storagemeter

    for gw in build_gateway(
        f"sqlite:///{tmp_path / 'r.db'}",
        tmp_path / "gw",
        price_book="forge",
        storage_meter_interval_seconds=0,
        artifact_retention_days=30,
    ):
        state = _state(gw)
        lonely, needed, chained = _upload(gw), _upload(gw), _upload(gw)
        _job, recent = _made_from(gw, needed)  # made today: keeps what it was made from
        _job, old_child = _made_from(gw, chained)  # old too: both expire, the child first
        young = _upload(gw)
        long_ago = datetime.now(UTC) - timedelta(days=40)
        for artifact_id in (lonely, needed, chained):
            _set(gw, artifact_id, created_at=long_ago)
        _set(gw, old_child, created_at=long_ago + timedelta(hours=1))  # registered after its input

        done = storagemeter.tick(state)
        assert sorted(done.expired) == sorted([lonely, chained, old_child]) and done.kept == [needed]
        listed = {a["artifact_id"] for a in gw.client.get("/v1/artifacts", headers=gw.auth()).json()["items"]}
        assert listed == {needed, recent, young}
        assert not any(state.store.exists(a) for a in (lonely, chained, old_child))
        with state.db.session() as session:
            reasons = session.scalars(
                select(LedgerEntry.payload).where(LedgerEntry.kind == "artifact_deleted")
            ).all()
        assert [p["reason"] for p in reasons] == ["retention"] * 3
        # What is left is metered in the same tick; the chain verifies.
        assert done.metered and _verify(gw)["ok"] is True
        assert storagemeter.tick(state).expired == []  # the one still needed stays, tick after tick


def test_a_serving_deployment_blocks_and_a_stopped_one_is_charged_before_it_goes(gw: Gateway) -> None:
    from nexa_gateway.db import ArtifactInput, PlatformMeta, Usage
    from nexa_gateway.services.deletion import INDEX_SINCE_KEY
    from nexa_store.serving import mark_stopped

    state = _state(gw)
    _job, checkpoint = _made_from(gw, _upload(gw))
    deploy_job, deployment = _made_from(gw, checkpoint, deployment=True)
    found = gw.client.get(f"/v1/artifacts/{checkpoint}/dependents", headers=gw.auth()).json()
    assert [(d["kind"], d["id"], d["blocking"]) for d in found["dependents"]] == [
        ("deployment", deployment, True)
    ]
    for target in (checkpoint, deployment):  # what it serves, and the deployment itself
        refused = gw.client.delete(f"/v1/artifacts/{target}", params={"force": "true"}, headers=gw.auth())
        assert refused.status_code == 409 and deployment in refused.json()["error"]["message"]
    refused = gw.client.delete(f"/v1/jobs/{deploy_job}", params={"force": "true"}, headers=gw.auth())
    assert refused.status_code == 409 and "undeploy" in refused.json()["error"]["message"]

    # Artifacts registered before the input index existed are found by their manifests.
    with state.db.session() as session:
        session.execute(delete(ArtifactInput))
        later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        session.merge(PlatformMeta(key=INDEX_SINCE_KEY, value=later))
    found = gw.client.get(f"/v1/artifacts/{checkpoint}/dependents", headers=gw.auth()).json()
    assert [d["id"] for d in found["dependents"]] == [deployment]

    # Stopped: the deployment meter has not charged it yet, so the deletion does, before its record goes.
    mark_stopped(state.store, deployment, reason="undeployed")
    r = gw.client.delete(f"/v1/artifacts/{deployment}", headers=gw.auth())
    assert r.status_code == 200, r.text
    with state.db.session() as session:
        hours = session.scalars(select(Usage.amount).where(Usage.job_id == deploy_job)).all()
    assert len(hours) == 1 and 73 <= hours[0] < 73.1
    assert _summary(gw).usage["deployment_hours"] == Decimal(str(hours[0]))
    r = gw.client.delete(f"/v1/artifacts/{checkpoint}", headers=gw.auth())
    assert r.status_code == 200, r.text  # nothing needs it now
    assert _verify(gw)["ok"] is True


def test_retention_pages_past_what_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page full of artifacts something still needs never stalls the older ones behind it."""
    from nexa_gateway.services import storagemeter

    monkeypatch.setattr(storagemeter, "RETENTION_BATCH", 1)
    for gw in build_gateway(
        f"sqlite:///{tmp_path / 'p.db'}",
        tmp_path / "gw",
        storage_meter_interval_seconds=0,
        artifact_retention_days=30,
    ):
        state = _state(gw)
        oldest, needed = _upload(gw), _upload(gw)
        _made_from(gw, needed)  # made today: keeps `needed`
        _set(gw, oldest, created_at=datetime.now(UTC) - timedelta(days=50))
        _set(gw, needed, created_at=datetime.now(UTC) - timedelta(days=40))  # the newest old one: first
        done = storagemeter.tick(state)
        assert done.kept == [needed] and done.expired == [oldest]
