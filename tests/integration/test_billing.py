"""Billing against the real gateway (SQLite and PostgreSQL): usage reported by a worker, priced
exactly by the price book in force when it was recorded, summarised for its tenant only."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nexa.contracts.billing import BillingSummary
from tests.integration.gateway_app import Gateway, build_gateway, finish_with_usage

pytestmark = pytest.mark.integration


def _finish(gw: Gateway, job: dict[str, Any], worker: dict[str, str], usage: dict[str, float]) -> None:
    finish_with_usage(gw, job, worker, usage)


def _train(gw: Gateway, gpu_type: str) -> dict[str, Any]:
    body = {
        "dataset_id": str(gw.dataset_file("sft.jsonl")),
        "model": "Mistral-7B",
        "resources": {"gpus": 1, "gpu_type": gpu_type},
    }
    r = gw.client.post("/v1/train", json=body, headers=gw.auth())
    assert r.status_code == 201, r.text
    return dict(r.json())


def _summary(
    gw: Gateway, key: str | None = None, path: str = "/v1/billing/summary", **params: str
) -> BillingSummary:
    r = gw.client.get(path, params=params, headers=gw.auth(key))
    assert r.status_code == 200, r.text
    return BillingSummary.model_validate(r.json())


def test_the_spec_prices_usage_exactly_per_job_type_and_tenant(gateway: Gateway) -> None:
    audit = gateway.submit_audit()
    _finish(gateway, audit, gateway.register_worker(), {"rows": 1500})
    train = _train(gateway, "A100")
    gpu_worker = gateway.register_worker(cpu_count=8, memory_gb=64, gpus=1, gpu_type="A100")
    _finish(gateway, train, gpu_worker, {"gpu_hours": 2, "cpu_hours": 0.5})

    bill = _summary(gateway)
    assert bill.price_book == "spec"
    # $0.20 per 1,000 rows × 1,500 = $0.30; $1.25 per A100-hour × 2 = $2.50; CPU-hours are not in the SPEC.
    assert bill.total == Decimal("2.80") and bill.total_cents == 280
    assert bill.by_job_type == {"audit": Decimal("0.30"), "train": Decimal("2.50")}
    assert [j.job_id for j in bill.by_job] == [train["job_id"], audit["job_id"]]
    assert bill.by_job[0].lines[0].label == "A100-hours" and bill.by_job[0].amount_cents == 250
    assert bill.usage == {"rows": Decimal(1500), "gpu_hours": Decimal(2), "cpu_hours": Decimal("0.5")}
    assert bill.unpriced == {"cpu_hours": Decimal("0.5")}
    assert [(d.amount, d.amount_cents) for d in bill.by_day] == [(Decimal("2.80"), 280)]
    # Forge's path is the same handler; the money travels as strings, never floats.
    forge = gateway.client.get("/api/billing/summary", headers=gateway.auth()).json()
    assert forge["total"] == "2.80" and forge["total_cents"] == 280
    # Another tenant sees none of it; a period before the usage is empty; a backwards period is refused.
    other = _summary(gateway, gateway.new_tenant_key("someone-else"))
    assert other.total == 0 and other.by_job == [] and other.usage == {}
    earlier = _summary(gateway, start="2025-01-01T00:00:00Z", end="2025-02-01T00:00:00Z")
    assert earlier.total == 0 and earlier.by_job == []
    backwards = gateway.client.get(
        "/v1/billing/summary", params={"start": "2025-02-01", "end": "2025-01-01"}, headers=gateway.auth()
    )
    assert backwards.status_code == 422 and backwards.json()["error"]["field"] == "start"
    # Operators see the same money on /metrics (Grafana's "Spend by job type"), by job type.
    metrics = gateway.client.get("/metrics").text
    assert 'nexa_spend_dollars_total{type="audit"} 0.3' in metrics
    assert 'nexa_spend_dollars_total{type="train"} 2.5' in metrics
    prices = gateway.client.get("/v1/billing/prices", headers=gateway.auth()).json()
    assert prices["name"] == "spec" and any(
        r["label"] == "A100-hours" for r in prices["versions"][0]["rates"]
    )


@pytest.fixture
def priced_gateway(tmp_path: Path) -> Iterator[tuple[Gateway, Path]]:
    book = tmp_path / "prices.json"
    book.write_text(json.dumps(_book([("2024-01-01T00:00:00+00:00", "0.20")])))
    yield from (
        (gw, book)
        for gw in build_gateway(f"sqlite:///{tmp_path / 'b.db'}", tmp_path / "gw", price_book=str(book))
    )


def _book(versions: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "name": "ours",
        "versions": [
            {"effective_from": at, "rates": [{"kind": "rows", "price": price, "per": 1000, "label": "rows"}]}
            for at, price in versions
        ],
    }


def test_a_price_change_applies_from_its_effective_time_never_to_the_past(
    priced_gateway: tuple[Gateway, Path],
) -> None:
    gateway, book = priced_gateway
    worker = gateway.register_worker()
    before = gateway.submit_audit()
    _finish(gateway, before, worker, {"rows": 1000})
    # The operator adds a version in force from now: the usage above keeps its price.
    change = datetime.now(UTC)
    book.write_text(json.dumps(_book([("2024-01-01T00:00:00+00:00", "0.20"), (change.isoformat(), "0.50")])))
    after = gateway.submit_audit()
    _finish(gateway, after, worker, {"rows": 1000})
    bill = _summary(gateway)
    assert bill.price_book == "ours"
    assert {j.job_id: j.amount for j in bill.by_job} == {
        before["job_id"]: Decimal("0.20"),
        after["job_id"]: Decimal("0.50"),
    }
    assert bill.total_cents == 70


def test_forges_resource_rates_and_a_bad_price_book_stops_the_gateway(tmp_path: Path) -> None:
    for gw in build_gateway(f"sqlite:///{tmp_path / 'f.db'}", tmp_path / "gw", price_book="forge"):
        train = _train(gw, "H100")
        _finish(
            gw,
            train,
            gw.register_worker(cpu_count=8, memory_gb=64, gpus=1, gpu_type="H100"),
            {"gpu_hours": 2},
        )
        bill = _summary(gw)
        assert bill.price_book == "forge" and bill.total == Decimal("5.00")  # $2.50 per GPU-hour, any type
    (tmp_path / "bad.json").write_text('{"name": "x", "versions": []}')
    for setting in ("no-such-preset", str(tmp_path / "bad.json")):
        with pytest.raises(ValueError, match="NEXA_PRICE_BOOK"):
            next(build_gateway(f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "x", price_book=setting))


def test_money_is_never_a_float_and_rates_pick_the_most_specific() -> None:
    from nexa.contracts.billing import to_cents
    from nexa_gateway.services.pricebooks import SPEC

    version = SPEC.version_at(datetime.now(UTC))
    assert version is not None
    a100, other = version.rate_for("gpu_hours", "train", "a100"), version.rate_for("gpu_hours", "train", "L4")
    assert a100 is not None and a100.label == "A100-hours" and other is not None and other.gpu_types is None
    assert version.rate_for("rows", "distill", None) is None  # rows are priced for audits only
    assert version.rate_for("prompt_tokens", "generate", None) is not None
    assert SPEC.version_at(datetime(2020, 1, 1, tzinfo=UTC)) is None
    tokens = version.rate_for("completion_tokens", "distill", None)
    assert tokens is not None and Decimal(123_456) / tokens.per * tokens.price == Decimal("0.0370368")
    assert [to_cents(Decimal(x)) for x in ("0.005", "0.0049", "2.675", "0")] == [1, 0, 268, 0]


def _upload(gw: Gateway, rows: int, key: str | None = None) -> dict[str, Any]:
    data = "".join(f'{{"prompt": "question {i}", "text": "row {i}"}}\n' for i in range(rows))
    r = gw.client.post("/v1/datasets", files={"file": ("d.jsonl", data.encode())}, headers=gw.auth(key))
    assert r.status_code == 201, r.text
    return dict(r.json())


def _estimate(gw: Gateway, job_type: str, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    r = gw.client.post(f"/v1/{job_type}/estimate", json=body, headers=gw.auth(key))
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_estimates_price_what_is_known_before_the_run_and_submit_nothing(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    dataset = _upload(gw, 2500)
    audit = _estimate(gw, "audit", {"dataset_uri": dataset["dataset_id"]})
    # 2,500 rows at $0.20 per 1,000: the dataset's own row count, exactly.
    assert audit["complete"] and audit["total"] == "0.50" and audit["total_cents"] == 50
    assert audit["lines"][0]["quantity"] == "2500" and dataset["dataset_id"] in audit["lines"][0]["basis"]
    distill = _estimate(
        gw, "distill", {"dataset_id": dataset["dataset_id"], "teacher": "Mistral-7B", "max_tokens": 100}
    )
    by_kind = {line["kind"]: line for line in distill["lines"]}
    assert by_kind["completion_tokens"]["quantity"] == "250000"  # an upper bound: rows × max_tokens
    assert int(by_kind["prompt_tokens"]["quantity"]) == dataset["size_bytes"] // 4
    generate = _estimate(gw, "generate", {"domain": "medical", "num_samples": 1000, "teacher": "Mistral-7B"})
    assert not generate["complete"]  # its prompts are written during the run
    train_body = {
        "dataset_id": dataset["dataset_id"],
        "model": "Mistral-7B",
        "holdout_fraction": 0.0,
        "resources": {"gpus": 1, "gpu_type": "A100"},
    }
    train = _estimate(gw, "train", train_body)
    # 6 FLOPs x 7e9 parameters (its name says) x the dataset's bytes / 4 x 3 epochs, at 35% of an A100.
    tokens = dataset["size_bytes"] // 4 * 3
    hours = Decimal(f"{6 * 7e9 * tokens / (312e12 * 0.35) / 3600:.6f}")
    line = train["lines"][0]
    assert train["complete"] and line["kind"] == "gpu_hours" and Decimal(line["quantity"]) == hours
    assert "7,000,000,000 parameters" in line["basis"] and "A100" in line["basis"]
    assert Decimal(train["total"]) == hours * Decimal("1.25")
    # Once a run of the same model on the same machine finished, its measured rate is used instead.
    submitted = gw.client.post("/v1/train", json=train_body, headers=gw.auth())
    assert submitted.status_code == 201, submitted.text
    gpu_worker = gw.register_worker(cpu_count=8, memory_gb=64, gpus=1, gpu_type="A100")
    claimed = gw.claim(gpu_worker)
    assert claimed is not None
    done = {
        "attempt": claimed["attempt"],
        "result": {"gpu_hours": 0.25},
        "usage": [{"kind": "gpu_hours", "amount": 0.25}],
    }
    job_url = f"/v1/workers/jobs/{claimed['job_id']}/complete"
    assert gw.client.post(job_url, json=done, headers=gpu_worker).status_code == 204
    # The job shows the estimate it was submitted with beside what it was charged.
    cost = gw.client.get(f"/v1/jobs/{claimed['job_id']}/cost", headers=gw.auth())
    assert cost.status_code == 200, cost.text
    compared = cost.json()["lines"]
    assert [(c["kind"], Decimal(c["estimated_quantity"]), c["quantity"]) for c in compared] == [
        ("gpu_hours", hours, "0.25")
    ]
    assert cost.json()["charged"] == "0.3125" and cost.json()["estimate"]["complete"]
    other_key = gw.new_tenant_key("nosy")
    assert gw.client.get(f"/v1/jobs/{claimed['job_id']}/cost", headers=gw.auth(other_key)).status_code == 404
    again = _estimate(gw, "train", {**train_body, "epochs": 6})  # twice the tokens: twice the time
    assert Decimal(again["lines"][0]["quantity"]) == Decimal("0.5")
    assert claimed["job_id"] in again["lines"][0]["basis"]
    unknown = _estimate(gw, "train", {**train_body, "model": "my-model-v1"})
    assert not unknown["complete"] and unknown["lines"][0]["quantity"] is None
    assert "size of my-model-v1 is unknown" in unknown["lines"][0]["basis"]
    deploy = _estimate(gw, "deploy", {"checkpoint_id": "ckpt_" + "a" * 26})
    assert deploy["total"] == "2.00"  # the SPEC's $2 per month of serving
    # Another tenant's dataset is unknown to this tenant's estimate: nothing about it leaks.
    foreign = _estimate(gw, "audit", {"dataset_uri": dataset["dataset_id"]}, key=other_key)
    assert not foreign["complete"] and "2500" not in json.dumps(foreign)
    # Nothing was submitted (but the one training job), and bad input is the same 422 as a submission's.
    assert [j["job_type"] for j in gw.client.get("/v1/jobs", headers=gw.auth()).json()["items"]] == ["train"]
    bad = gw.client.post("/v1/audit/estimate", json={}, headers=gw.auth())
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "dataset_uri"


def test_deployment_time_is_metered_by_the_second_once_it_stops(gateway: Gateway) -> None:
    """The serving process's run, from the start its record names to the exit it recorded, once."""
    from nexa.ids import new_id
    from nexa_gateway.db import Artifact, Job, Usage, utcnow
    from nexa_gateway.services.deploymeter import meter_stopped
    from nexa_store.serving import DEPLOYMENT_FILE, derived_id, mark_stopped

    state = gateway.client.app.state.nexa  # type: ignore[attr-defined]
    tenant = _summary(gateway).tenant_id
    job_id, deployment_id = new_id("job"), new_id("dp")
    started = datetime.now(UTC) - timedelta(hours=73)  # 73 hours of serving: a tenth of a month
    with state.store.begin("deployment", deployment_id) as writer:
        (writer.path / DEPLOYMENT_FILE).write_text(json.dumps({"started_at": started.isoformat()}))
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
            )
        )
        session.add(
            Artifact(
                id=deployment_id,
                tenant_id=tenant,
                kind="deployment",
                uri="u",
                job_id=job_id,
                created_at=utcnow(),
            )
        )
        session.commit()
        assert meter_stopped(session, state.store) == []  # still serving: nothing charged yet
    mark_stopped(state.store, deployment_id, reason="undeployed")
    stop = json.loads(state.store.read_file(derived_id(deployment_id, "stopped"), DEPLOYMENT_FILE))[
        "stopped_at"
    ]
    expected = round((datetime.fromisoformat(stop) - started).total_seconds() / 3600, 6)
    with state.db.session() as session:
        assert meter_stopped(session, state.store) == [job_id]
        assert meter_stopped(session, state.store) == []  # once, however many ticks see the stop
        hours = session.scalars(select(Usage.amount).where(Usage.job_id == job_id)).all()
    assert hours == [pytest.approx(expected)] and 73 <= expected < 73.1
    line = _summary(gateway).by_job[0].lines[0]
    assert line.kind == "deployment_hours" and line.label.startswith("deployment")
    # $2 per 730-hour month, prorated: 73 hours and a few seconds is $0.20 and a little.
    assert Decimal("0.20") <= line.amount < Decimal("0.2003")


def test_budgets_refuse_what_would_pass_them_with_402_naming_the_numbers(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    worker = gw.register_worker()
    set_budget = gw.client.put(
        "/v1/admin/tenants/default/budget", json={"monthly_limit_cents": 100}, headers=gw.auth()
    )
    assert set_budget.status_code == 200 and set_budget.json()["remaining_cents"] == 100
    dataset = _upload(gw, 2500)["dataset_id"]  # estimated at $0.50 an audit

    def audit(**extra: Any) -> Any:
        return gw.client.post("/v1/audit", json={"dataset_uri": dataset, **extra}, headers=gw.auth())

    first = audit(idempotency_key="first")
    assert first.status_code == 201
    _finish(gw, first.json(), worker, {"rows": 2500})
    second = audit()
    assert second.status_code == 201  # $0.50 spent + $0.50 estimated fits $1.00 exactly
    _finish(gw, second.json(), worker, {"rows": 2500})
    refused = audit()
    assert refused.status_code == 402 and refused.json()["error"]["type"] == "budget_exceeded"
    message = refused.json()["error"]["message"]
    assert "$1.00" in message and "$0.50" in message and "leaves $0.00" in message
    # A repeat of an accepted submission returns its job: the budget never refuses what exists.
    again = audit(idempotency_key="first")
    assert again.status_code == 200 and again.json()["job_id"] == first.json()["job_id"]
    own = gw.client.get("/v1/billing/budget", headers=gw.auth()).json()
    assert own == {
        "tenant_id": own["tenant_id"],
        "monthly_limit_cents": 100,
        "spent_this_month_cents": 100,
        "remaining_cents": 0,
    }
    # A job's own cap, for a tenant without a budget; members cannot set budgets.
    member = gw.new_tenant_key("capped")
    other = _upload(gw, 2500, key=member)["dataset_id"]
    capped = gw.client.post(
        "/v1/audit", json={"dataset_uri": other, "max_cost_cents": 10}, headers=gw.auth(member)
    )
    assert capped.status_code == 402 and capped.json()["error"]["field"] == "max_cost_cents"
    assert "$0.50" in capped.json()["error"]["message"]
    fits = gw.client.post(
        "/v1/audit", json={"dataset_uri": other, "max_cost_cents": 50}, headers=gw.auth(member)
    )
    assert fits.status_code == 201
    denied = gw.client.put(
        "/v1/admin/tenants/capped/budget", json={"monthly_limit_cents": 10**6}, headers=gw.auth(member)
    )
    assert denied.status_code == 403
    # Removing the budget lets the tenant submit again.
    assert (
        gw.client.put(
            "/v1/admin/tenants/default/budget", json={"monthly_limit_cents": None}, headers=gw.auth()
        ).status_code
        == 200
    )
    assert audit().status_code == 201


def test_usage_is_hash_chained_as_it_is_recorded_and_tampering_is_found(gateway: Gateway) -> None:
    from sqlalchemy import update

    from nexa_gateway.db import LedgerEntry, Usage
    from nexa_gateway.services import ledger

    worker = gateway.register_worker()
    for rows in (100, 200, 300):
        _finish(gateway, gateway.submit_audit(), worker, {"rows": rows})
    tenant = _summary(gateway).tenant_id

    def verify() -> dict[str, Any]:
        r = gateway.client.get("/v1/admin/tenants/default/ledger/verify", headers=gateway.auth())
        assert r.status_code == 200, r.text
        return dict(r.json())

    assert verify() == {"stream": f"usage:{tenant}", "entries": 3, "ok": True, "problem": None}
    state = gateway.client.app.state.nexa  # type: ignore[attr-defined]
    with state.db.session() as session:
        entries = session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)).all()
        assert [e.seq for e in entries] == [1, 2, 3] and entries[0].prev_hash == ledger.GENESIS
        assert [e.prev_hash for e in entries[1:]] == [e.hash for e in entries[:-1]]
        # Someone edits a bill in the database: the chain says which row.
        first = session.scalars(select(Usage.id).order_by(Usage.id)).first()
        session.execute(update(Usage).where(Usage.id == first).values(amount=1))
        session.commit()
    assert verify()["ok"] is False and f"usage row {first} differs" in str(verify()["problem"])
    with state.db.session() as session:
        session.execute(update(Usage).where(Usage.id == first).values(amount=100))
        session.execute(update(LedgerEntry).where(LedgerEntry.seq == 2).values(payload={"usage_id": 0}))
        session.commit()
    assert verify()["problem"] == "entry 2 does not match its hash"
    # Members cannot read another tenant's ledger, or their own through the admin route.
    member = gateway.new_tenant_key("ledger-member")
    assert (
        gateway.client.get(
            "/v1/admin/tenants/default/ledger/verify", headers=gateway.auth(member)
        ).status_code
        == 403
    )


def test_a_running_job_reaching_the_monthly_budget_is_stopped_and_charged_what_was_left(
    gateway: Gateway,
) -> None:
    """The worker protocol: usage so far rides on progress reports; the heartbeat answers with the
    platform's stop; whatever the worker then reports, the job ends budget_exceeded, billed within it."""
    gw = gateway
    gpu_worker = gw.register_worker(cpu_count=8, memory_gb=64, gpus=1, gpu_type="A100")
    # $1.00 a month; $0.50 of it spent by an audit (2,500 rows).
    assert gw.client.put(
        "/v1/admin/tenants/default/budget", json={"monthly_limit_cents": 100}, headers=gw.auth()
    ).is_success
    _finish(gw, gw.submit_audit(), gw.register_worker(), {"rows": 2500})
    train = _train(gw, "A100")  # machine time is not estimated: accepted with $0.50 left
    claimed = gw.claim(gpu_worker)
    assert claimed is not None and claimed["job_id"] == train["job_id"]
    job_url, attempt = f"/v1/workers/jobs/{train['job_id']}", claimed["attempt"]

    def progress(gpu_hours: float) -> None:
        body = {"attempt": attempt, "progress": 0.5, "usage": [{"kind": "gpu_hours", "amount": gpu_hours}]}
        assert gw.client.post(f"{job_url}/progress", json=body, headers=gpu_worker).status_code == 204

    def heartbeat() -> dict[str, Any]:
        r = gw.client.post(f"{job_url}/heartbeat", json={"attempt": attempt}, headers=gpu_worker)
        assert r.status_code == 200, r.text
        return dict(r.json())

    progress(0.2)  # $0.25 of $0.50 left: runs on
    assert heartbeat()["cancel_requested"] is False
    progress(0.4)  # $0.50: the budget is reached
    ack = heartbeat()
    assert ack["cancel_requested"] is True and ack["stop_code"] == "budget_exceeded"
    assert "monthly budget of $1.00" in ack["stop_message"] and "$0.50 was spent" in ack["stop_message"]
    # The worker took a while to stop and reports it as a cancel with 0.6 A100-hours ($0.75).
    fail = {
        "attempt": attempt,
        "code": "cancelled",
        "message": "cancelled by the user",
        "retryable": True,
        "usage": [{"kind": "gpu_hours", "amount": 0.6}],
    }
    assert gw.client.post(f"{job_url}/fail", json=fail, headers=gpu_worker).status_code == 204
    job = gw.client.get(f"/v1/jobs/{train['job_id']}", headers=gw.auth()).json()
    assert job["status"] == "failed" and job["error"]["code"] == "budget_exceeded"
    assert not job["error"]["retryable"] and job["attempts"] == 1
    bill = _summary(gw)
    assert bill.total_cents == 100 and bill.by_job_type["train"] == Decimal("0.50"), bill
    assert bill.usage["gpu_hours"] == Decimal("0.4")  # scaled to what the budget left
    verify = gw.client.get("/v1/admin/tenants/default/ledger/verify", headers=gw.auth())
    assert verify.status_code == 200 and verify.json()["ok"] is True, verify.text


def test_a_worker_that_ignores_a_budget_stop_is_ended_by_the_reaper(
    sqlite_gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nexa_gateway.services import runningcaps

    monkeypatch.setattr(runningcaps, "STOP_GRACE_SECONDS", 0)
    gw = sqlite_gateway
    worker = gw.register_worker(cpu_count=8, memory_gb=64, gpus=1, gpu_type="A100")
    train = gw.client.post(
        "/v1/train",
        json={
            "dataset_id": str(gw.dataset_file("sft.jsonl")),
            "model": "Mistral-7B",
            "resources": {"gpus": 1, "gpu_type": "A100"},
            "max_cost_cents": 125,
        },
        headers=gw.auth(),
    ).json()
    claimed = gw.claim(worker)
    assert claimed is not None
    job_url = f"/v1/workers/jobs/{train['job_id']}"
    body = {"attempt": claimed["attempt"], "progress": 0.1, "usage": [{"kind": "gpu_hours", "amount": 1.0}]}
    assert gw.client.post(f"{job_url}/progress", json=body, headers=worker).status_code == 204
    deadline = time.monotonic() + 60
    job = gw.client.get(f"/v1/jobs/{train['job_id']}", headers=gw.auth()).json()
    while job["status"] == "running":
        # The worker keeps its lease alive and never stops: the reaper ends the attempt.
        gw.client.post(f"{job_url}/heartbeat", json={"attempt": claimed["attempt"]}, headers=worker)
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
        job = gw.client.get(f"/v1/jobs/{train['job_id']}", headers=gw.auth()).json()
    assert job["status"] == "failed" and job["error"]["code"] == "budget_exceeded"
    assert "max_cost_cents 125" in job["error"]["message"]
    assert "the worker did not stop it" in job["error"]["message"]


def test_machine_time_uses_the_rate_the_connected_nodes_measured(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    dataset = _upload(gw, 2500)
    body = {"dataset_id": dataset["dataset_id"], "model": "Mistral-7B", "holdout_fraction": 0.0}
    tokens = dataset["size_bytes"] // 4 * 3
    datasheet = _estimate(gw, "train", body)["lines"][0]
    assert Decimal(datasheet["quantity"]) == Decimal(f"{6 * 7e9 * tokens / 20e9 / 3600:.6f}")
    # Two CPU nodes measured 100 and 300 GFLOP/s over 4 threads: the median, 50 GFLOP/s a thread,
    # at the half of it training reaches.
    gw.register_worker(cpu_count=4, memory_gb=16, cpu_gflops=100.0)
    gw.register_worker(cpu_count=4, memory_gb=16, cpu_gflops=300.0)
    probed = _estimate(gw, "train", body)["lines"][0]
    assert Decimal(probed["quantity"]) == Decimal(f"{6 * 7e9 * tokens / 25e9 / 3600:.6f}")
    assert "50 GFLOP/s per CPU thread, the median its 2 connected node(s) measured" in probed["basis"]
