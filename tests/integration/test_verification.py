"""Redundant execution against the real gateway (SQLite and PostgreSQL): replicas on distinct nodes,
a quorum over output hashes the gateway computes itself, outliers, more replicas after a
disagreement, spot checks at the platform's cost, and the credits and reputation that follow."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from nexa.ids import new_id
from nexa_gateway.db import LedgerEntry, NodeRecord, utcnow
from nexa_store.local import LocalArtifactStore
from tests.integration.gateway_app import WORKER_SECRET, Gateway, build_gateway


def _node(gw: Gateway, name: str, key: Any = None) -> tuple[dict[str, str], str]:
    body: dict[str, Any] = {"name": name}
    if key is not None:  # a NodeKey, with the proof that this node holds it
        body |= {"public_key": key.public_hex, "key_proof": key.key_proof().model_dump(mode="json")}
    r = gw.client.post(
        "/v1/workers/register", json=body, headers={"Authorization": f"Bearer {WORKER_SECRET}"}
    )
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}, r.json()["worker_id"]


def _job(gw: Gateway, job_id: str) -> dict[str, Any]:
    return dict(gw.client.get(f"/v1/jobs/{job_id}", headers=gw.auth()).json())


def _finish(
    gw: Gateway,
    node: dict[str, str],
    claimed: dict[str, Any],
    text: str,
    score: float = 0.9,
    key: Any = None,
    worker_id: str = "",
) -> str:
    """Complete a claimed audit the way a worker does: write the output through the store, report it
    (signed with ``key`` when the node has one)."""
    store = LocalArtifactStore(gw.root / "artifacts")
    ds = new_id("ds")
    writer = store.begin("dataset", ds)
    (writer.path / "scored.jsonl").write_text(text)
    writer.commit(
        job_id=claimed["job_id"],
        attempt=claimed["attempt"],
        tenant_id=claimed["tenant_id"],
        metrics={"num_rows": 1, "mean_score": score},
    )
    body = {
        "attempt": claimed["attempt"],
        "result": {"dataset_id": ds, "mean_score": score},
        "artifacts": [ds],
        "usage": [{"kind": "rows", "amount": 1}],
    }
    if key is not None:
        from nexa.contracts import ResultReport
        from nexa_store.envelopes import manifest_digest

        body["manifests"] = {ds: manifest_digest(store.read_manifest(ds))}
        report = ResultReport.model_validate(body)
        body["envelope"] = key.sign(
            "complete", claimed["job_id"], claimed["attempt"], worker_id, report
        ).model_dump(mode="json")
    r = gw.client.post(f"/v1/workers/jobs/{claimed['job_id']}/complete", json=body, headers=node)
    assert r.status_code == 204, r.text
    return ds


def _verification(gw: Gateway, job_id: str) -> dict[str, Any]:
    r = gw.client.get(f"/v1/jobs/{job_id}/verification", headers=gw.auth())
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_quorum_of_honest_replicas_wins_and_the_liar_is_an_outlier(
    gateway: Gateway, tmp_path: Path
) -> None:
    from nexa.contracts import ResultReport
    from nexa_store.envelopes import NodeKey

    gw = gateway
    job = gw.submit_audit(verification={"replicas": 3, "quorum": 2})
    assert job["status"] == "running" and "3 replicas queued" in job["progress_message"]
    liar_key = NodeKey.load_or_create(tmp_path / "liar-key")
    nodes = {
        "honest-a": _node(gw, "honest-a"),
        "liar": _node(gw, "liar", liar_key),
        "honest-b": _node(gw, "honest-b"),
    }

    # Each node is handed one replica, never two of one job.
    claims = {}
    for name, (node, _) in nodes.items():
        claims[name] = gw.claim(node)
        assert claims[name] is not None
    assert len({c["job_id"] for c in claims.values()}) == 3
    assert job["job_id"] not in {c["job_id"] for c in claims.values()}  # the verified job runs nowhere
    assert gw.claim(nodes["liar"][0]) is None

    # A replayed result (the liar's own valid signature over another replica's report) and a forged one
    # are refused and recorded; neither counts toward the quorum.
    liar, liar_id = nodes["liar"]
    theirs = claims["honest-a"]
    report = ResultReport(attempt=claims["liar"]["attempt"], result={"mean_score": 0.9}, usage=[])
    replay = liar_key.sign("complete", theirs["job_id"], theirs["attempt"], liar_id, report)
    sent = gw.client.post(
        f"/v1/workers/jobs/{claims['liar']['job_id']}/complete",
        json=report.model_dump(mode="json") | {"envelope": replay.model_dump(mode="json")},
        headers=liar,
    )
    assert sent.status_code == 422 and sent.json()["error"]["type"] == "report_signature_invalid"
    forged = NodeKey.load_or_create(tmp_path / "forger").sign(
        "complete", claims["liar"]["job_id"], claims["liar"]["attempt"], liar_id, report
    )
    sent = gw.client.post(
        f"/v1/workers/jobs/{claims['liar']['job_id']}/complete",
        json=report.model_dump(mode="json") | {"envelope": forged.model_dump(mode="json")},
        headers=liar,
    )
    assert sent.status_code == 422
    kinds = [e["kind"] for e in _job(gw, claims["liar"]["job_id"])["events"]]
    assert kinds.count("report_refused") == 2
    # Then the liar reports a wrong result, correctly signed.
    _finish(
        gw, liar, claims["liar"], '{"text": "x", "score": 0.1}\n', score=0.1, key=liar_key, worker_id=liar_id
    )
    _finish(gw, nodes["honest-a"][0], claims["honest-a"], '{"text": "x", "score": 0.9}\n')
    assert _job(gw, job["job_id"])["status"] == "running"  # 1 against 1: no quorum yet
    honest_ds = _finish(gw, nodes["honest-b"][0], claims["honest-b"], '{"text": "x", "score": 0.9}\n')

    done = _job(gw, job["job_id"])
    assert done["status"] == "completed", done
    assert done["result"]["mean_score"] == 0.9  # the quorum's result, not the liar's
    assert "verified" in [e["kind"] for e in done["events"]]
    seen = _verification(gw, job["job_id"])
    verdicts = {r["worker_id"]: r["verdict"] for r in seen["replicas"]}
    assert verdicts == {
        nodes["honest-a"][1]: "agreed",
        nodes["liar"][1]: "outlier",
        nodes["honest-b"][1]: "agreed",
    }
    assert seen["state"] == "agreed" and seen["purpose"] == "requested"
    assert seen["agreed_digest"] == next(r["digest"] for r in seen["replicas"] if r["verdict"] == "agreed")
    assert done["result"]["dataset_id"] in {honest_ds} | {
        _job(gw, r["job_id"])["result"]["dataset_id"] for r in seen["replicas"] if r["verdict"] == "agreed"
    }

    # Reputation follows: the liar falls below a new node, the honest rise above one.
    def credits(worker_id: str) -> dict[str, Any]:
        r = gw.client.get(f"/v1/credits/{worker_id}", headers=gw.auth())
        assert r.status_code == 200, r.text
        return dict(r.json())

    liar = credits(nodes["liar"][1])
    honest = credits(nodes["honest-a"][1])
    assert liar["outliers"] == 1 and liar["reputation"] < 0.5 < honest["reputation"]
    listed = gw.client.get(f"/v1/workers/{nodes['liar'][1]}", headers=gw.auth()).json()
    assert listed["reputation"] == liar["reputation"] and listed["credits"] == liar["credits"]
    assert liar["credits"] < 0 and liar["entries"][0]["kind"] == "penalty"
    assert honest["verified_jobs"] == 1 and honest["credits"] >= 0
    # The tenant pays for the replicas it asked for: each replica's usage is on its bill.
    from nexa_gateway.db import Usage

    with gw.client.app.state.nexa.db.session() as session:  # type: ignore[attr-defined]
        charged = {u.job_id for u in session.scalars(select(Usage).where(Usage.kind == "rows"))}
    assert {c["job_id"] for c in claims.values()} <= charged

    nexapod = gw.client.get("/nodes", headers=gw.auth()).json()["items"]
    assert {n["worker_id"] for n in nexapod} >= {w for _, w in nodes.values()}
    assert (
        gw.client.get(f"/credits/{nodes['liar'][1]}", headers=gw.auth()).json()["credits"] == liar["credits"]
    )
    board = gw.client.get("/v1/leaderboard", headers=gw.auth()).json()["rows"]
    assert board[-1]["name"] == "liar" and [r["rank"] for r in board] == [1, 2, 3]
    csv_text = gw.client.get("/v1/leaderboard?format=csv", headers=gw.auth()).text
    assert csv_text.splitlines()[0] == "rank,worker_id,name,tier,credits,verified_jobs,reputation"
    assert len(csv_text.splitlines()) == 4

    # The credit ledger is hash-chained: the balance matches its entries, and an edit is found.
    for _, worker_id in nodes.values():
        check = gw.client.get(f"/v1/credits/{worker_id}/verify", headers=gw.auth()).json()
        assert check["ok"], check
    state = gw.client.app.state.nexa  # type: ignore[attr-defined]
    with state.db.session() as session:
        entry = session.scalar(
            select(LedgerEntry).where(LedgerEntry.stream == f"credits:{liar_key.public_hex}")
        )
        assert entry is not None
        session.execute(
            update(LedgerEntry)
            .where(LedgerEntry.id == entry.id)
            .values(payload={**entry.payload, "credits": 0})
        )
    tampered = gw.client.get(f"/v1/credits/{nodes['liar'][1]}/verify", headers=gw.auth()).json()
    assert not tampered["ok"] and "does not match its hash" in tampered["problem"]


def test_a_disagreement_starts_another_replica_and_too_many_fail_the_job(gateway: Gateway) -> None:
    gw = gateway
    job = gw.submit_audit(verification={"replicas": 2, "quorum": 2, "max_replicas": 3})
    a, b, c = (_node(gw, n)[0] for n in ("a", "b", "c"))
    first, second = gw.claim(a), gw.claim(b)
    assert first and second
    _finish(gw, a, first, "one\n")
    _finish(gw, b, second, "two\n")
    seen = _verification(gw, job["job_id"])
    assert len(seen["replicas"]) == 3 and seen["state"] == "open"  # a third replica to break the tie
    assert "replica_started" in [e["kind"] for e in _job(gw, job["job_id"])["events"]]
    third = gw.claim(c)
    assert third is not None and third["job_id"] == seen["replicas"][2]["job_id"]
    _finish(gw, c, third, "three\n")
    failed = _job(gw, job["job_id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "quorum_not_reached", failed
    assert "no 2 of 3 replicas agree" in failed["error"]["message"]


def test_cancelling_a_verified_job_stops_its_replicas(gateway: Gateway) -> None:
    gw = gateway
    job = gw.submit_audit(verification={"replicas": 2})
    node, _ = _node(gw, "n")
    claimed = gw.claim(node)
    assert claimed is not None
    r = gw.client.post(f"/v1/jobs/{job['job_id']}/cancel", headers=gw.auth())
    assert r.status_code == 200, r.text
    replicas = {x["job_id"]: x for x in _verification(gw, job["job_id"])["replicas"]}
    others = [j for j in replicas if j != claimed["job_id"]]
    assert _job(gw, others[0])["status"] == "cancelled"
    beat = gw.client.post(
        f"/v1/workers/jobs/{claimed['job_id']}/heartbeat", json={"attempt": claimed["attempt"]}, headers=node
    )
    assert beat.status_code == 200 and beat.json()["cancel_requested"], beat.text


def test_a_job_without_verification_has_none(gateway: Gateway) -> None:
    job = gateway.submit_audit()
    r = gateway.client.get(f"/v1/jobs/{job['job_id']}/verification", headers=gateway.auth())
    assert r.status_code == 404


def test_a_spot_check_reruns_a_new_nodes_job_elsewhere_at_the_platforms_cost(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for gw in build_gateway(f"sqlite:///{tmp_path / 'nexa.db'}", tmp_path / "gw", spot_check_share=1.0):
        job = gw.submit_audit()
        (first, first_id), (second, second_id) = _node(gw, "new-node"), _node(gw, "checker")
        claimed = gw.claim(first)
        assert claimed is not None and claimed["job_id"] == job["job_id"]
        _finish(gw, first, claimed, "same\n")
        assert _job(gw, job["job_id"])["status"] == "completed"  # the user's job is not held back
        seen = _verification(gw, job["job_id"])
        assert seen["purpose"] == "spot_check" and len(seen["replicas"]) == 2
        assert gw.claim(first) is None  # never checked by the node that ran it
        check = gw.claim(second)
        assert check is not None and check["job_id"] == seen["replicas"][1]["job_id"]
        _finish(gw, second, check, "same\n")
        seen = _verification(gw, job["job_id"])
        assert seen["state"] == "agreed" and [r["verdict"] for r in seen["replicas"]] == ["agreed", "agreed"]
        assert "spot_check" in [e["kind"] for e in _job(gw, job["job_id"])["events"]]
        state = gw.client.app.state.nexa  # type: ignore[attr-defined]
        from nexa_gateway.db import Usage

        with state.db.session() as session:
            charged = {u.job_id for u in session.scalars(select(Usage))}
            assert job["job_id"] in charged and check["job_id"] not in charged  # the platform's cost
            records = {r.worker_id: r for r in session.scalars(select(NodeRecord))}
            assert records[first_id].verified_jobs == 1 and records[second_id].verified_jobs == 1


def test_trust_level_and_holdback_keep_work_from_a_node_in_bad_standing(tmp_path: Path) -> None:
    from nexa_gateway.db import Job

    for gw in build_gateway(
        f"sqlite:///{tmp_path / 'nexa.db'}",
        tmp_path / "gw",
        holdback_seconds=3600,
        holdback_below_reputation=0.45,
    ):
        (new_node, _), (liar, liar_id) = _node(gw, "new"), _node(gw, "liar")
        state = gw.client.app.state.nexa  # type: ignore[attr-defined]
        with state.db.session() as session:
            session.add(NodeRecord(node_key=liar_id, worker_id=liar_id, outliers=3.0, reputation=0.2))
        trusted = gw.submit_audit(resources={"min_reputation": 0.6})
        plain = gw.submit_audit()
        # The liar (0.2) may take neither: the trusted job is above it, the plain one is held back an hour.
        assert gw.claim(liar) is None
        # A new node (0.5) takes the plain job at once, never the one that asks for 0.6.
        got = gw.claim(new_node)
        assert got is not None and got["job_id"] == plain["job_id"]
        assert gw.claim(new_node) is None
        # Once a job has waited out the hold-back, the node in bad standing may have it.
        other = gw.submit_audit()
        with state.db.session() as session:
            session.execute(
                update(Job).where(Job.id == other["job_id"]).values(created_at=utcnow() - timedelta(hours=2))
            )
        got = gw.claim(liar)
        assert got is not None and got["job_id"] == other["job_id"]
        assert _job(gw, trusted["job_id"])["status"] == "pending"


def test_a_replica_with_the_right_files_but_another_result_does_not_agree(gateway: Gateway) -> None:
    gw = gateway
    job = gw.submit_audit(verification={"replicas": 3, "quorum": 2})
    (a, _), (liar, liar_id), (b, _) = _node(gw, "a"), _node(gw, "liar"), _node(gw, "b")
    claims = [gw.claim(n) for n in (liar, a, b)]
    assert all(claims)
    _finish(
        gw, liar, claims[0], "same bytes\n", score=0.001
    )  # the files agree; the numbers it reports do not
    _finish(gw, a, claims[1], "same bytes\n")
    _finish(gw, b, claims[2], "same bytes\n")
    done = _job(gw, job["job_id"])
    assert done["status"] == "completed" and done["result"]["mean_score"] == 0.9
    verdicts = {r["worker_id"]: r["verdict"] for r in _verification(gw, job["job_id"])["replicas"]}
    assert verdicts[liar_id] == "outlier"


def test_a_verified_job_without_a_quorum_in_its_timeout_fails_and_a_lapsed_replica_can_be_taken_again(
    tmp_path: Path,
) -> None:
    from nexa_gateway.db import Job

    for gw in build_gateway(f"sqlite:///{tmp_path / 'nexa.db'}", tmp_path / "gw", lease_seconds=1):
        # Only one node: a second replica can never run, so the job fails at its timeout, not never.
        job = gw.submit_audit(verification={"replicas": 2}, timeout_seconds=3600)
        node, _ = _node(gw, "alone")
        first = gw.claim(node)
        assert first is not None and gw.claim(node) is None
        # Its lease runs out (it stopped heartbeating): the same node may take that replica again.
        deadline = time.monotonic() + 60
        while _job(gw, first["job_id"])["status"] != "pending":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        again = gw.claim(node)
        assert again is not None and again["job_id"] == first["job_id"] and again["attempt"] == 2
        state = gw.client.app.state.nexa  # type: ignore[attr-defined]
        with state.db.session() as session:  # the verification has waited past its timeout
            session.execute(
                update(Job).where(Job.id == job["job_id"]).values(created_at=utcnow() - timedelta(hours=2))
            )
        while _job(gw, job["job_id"])["status"] != "failed":
            assert time.monotonic() < deadline, _job(gw, job["job_id"])
            time.sleep(0.1)
        failed = _job(gw, job["job_id"])
        assert failed["error"]["code"] == "quorum_not_reached"
        assert "within timeout_seconds=3600" in failed["error"]["message"]
        others = [r for r in _verification(gw, job["job_id"])["replicas"] if r["job_id"] != first["job_id"]]
        assert [r["status"] for r in others] == ["cancelled"]


def test_a_tenants_own_nodes_cannot_condemn_a_platform_node_nor_earn_from_their_own_tenant(
    sqlite_gateway: Gateway,
) -> None:
    gw = sqlite_gateway
    token = gw.client.post("/v1/nodes/tokens", json={"name": "mine"}, headers=gw.auth())
    assert token.status_code == 201, token.text
    own = {"Authorization": f"Bearer {token.json()['token']}"}
    owned = []
    for name in ("mine-1", "mine-2"):
        r = gw.client.post("/v1/workers/register", json={"name": name}, headers=own)
        owned.append(({"Authorization": f"Bearer {r.json()['token']}"}, r.json()["worker_id"]))
    platform, platform_id = _node(gw, "platform")
    job = gw.submit_audit(verification={"replicas": 3, "quorum": 2})
    claims = [gw.claim(n) for n, _ in owned] + [gw.claim(platform)]
    assert all(claims)
    _finish(gw, owned[0][0], claims[0], "tenant's answer\n", score=0.5)
    _finish(gw, owned[1][0], claims[1], "tenant's answer\n", score=0.5)
    _finish(gw, platform, claims[2], "another answer\n")
    assert _job(gw, job["job_id"])["status"] == "completed"  # the tenant's quorum decides its own job
    for _, worker_id in [*owned, (None, platform_id)]:
        record = gw.client.get(f"/v1/credits/{worker_id}", headers=gw.auth()).json()
        assert (record["credits"], record["outliers"], record["verified_jobs"]) == (0.0, 0, 0), record
