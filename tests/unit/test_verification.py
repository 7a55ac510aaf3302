"""The pure parts of redundant execution and node standing: table tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nexa.contracts import ArtifactManifest, FileEntry
from nexa.contracts.common import Verification
from nexa_gateway.services.reputation import credited_work, fade, score
from nexa_gateway.services.verification import Member, agree, decide, digest, numbers, within


def manifest(
    files: dict[str, str], metrics: dict | None = None, artifact_id: str = "ds_x"
) -> ArtifactManifest:
    return ArtifactManifest(
        artifact_id=artifact_id,
        kind="dataset",
        created_at=datetime.now(UTC),
        job_id="job_a",
        metrics=metrics or {},
        files=[FileEntry(path=p, sha256=h, size=1) for p, h in files.items()],
    )


def test_digest_ignores_ids_and_order_but_not_content() -> None:
    a = manifest({"a.parquet": "1" * 64, "report.json": "2" * 64}, artifact_id="ds_one")
    b = manifest({"report.json": "2" * 64, "a.parquet": "1" * 64}, artifact_id="ds_two")
    c = manifest({"a.parquet": "1" * 64, "report.json": "3" * 64})
    assert digest([a]) == digest([b])
    assert digest([a]) != digest([c])
    # The result counts, but not the fields that name things.
    assert digest([a], {"dataset_id": "ds_1", "score": 0.9}) == digest(
        [b], {"dataset_id": "ds_2", "score": 0.9}
    )
    assert digest([a], {"score": 0.9}) != digest([a], {"score": 0.1})
    assert digest([], {"score": 0.9}) != digest([], {"score": 0.1})  # no files: the result decides


def test_numbers_flatten_metrics_and_result_but_skip_names() -> None:
    m = manifest({}, {"loss": 0.5, "nested": {"acc": 1}, "tier": "A"})
    found = numbers([m], {"dataset_id": 7, "rows": 10, "report_uri": 3, "ok": True})
    assert found == {"loss": 0.5, "nested.acc": 1.0, "rows": 10.0, "ok": 1.0}


@pytest.mark.parametrize(
    ("a", "b", "tol", "same"),
    [
        (100.0, 100.9, 0.01, True),
        (100.0, 101.5, 0.01, False),
        (0.001, 0.009, 0.01, True),
        (0.0, 0.02, 0.01, False),
    ],
)
def test_within(a: float, b: float, tol: float, same: bool) -> None:
    assert within(a, b, tol) is same


def test_agree_exact_and_tolerance() -> None:
    x = {"digest": "d1", "numbers": {"loss": 1.0, "acc": 0.5}}
    y = {"digest": "d2", "numbers": {"loss": 1.005, "acc": 0.5}}
    assert not agree(x, y, compare="exact", tolerance=0.01, metrics=[])
    assert agree(x, y, compare="tolerance", tolerance=0.01, metrics=[])
    assert not agree(x, y, compare="tolerance", tolerance=0.001, metrics=["loss"])
    assert agree(x, y, compare="tolerance", tolerance=0.001, metrics=["acc"])
    # A metric one replica lacks is no agreement; nothing to compare is none either.
    assert not agree(x, {"numbers": {"loss": 1.0}}, compare="tolerance", tolerance=0.1, metrics=[])
    assert not agree({"numbers": {}}, {"numbers": {}}, compare="tolerance", tolerance=0.1, metrics=[])
    assert not agree({"digest": None}, {"digest": None}, compare="exact", tolerance=0, metrics=[])


def out(d: str) -> dict:
    return {"digest": d, "numbers": {}}


def m(job: str, status: str, d: str | None = None) -> Member:
    return Member(job, status, out(d) if d else None)


EXACT = {"compare": "exact", "tolerance": 0.0, "metrics": []}


@pytest.mark.parametrize(
    ("members", "quorum", "most", "state", "agreed", "outliers", "start"),
    [
        # all pending: wait
        ([m("a", "pending"), m("b", "pending"), m("c", "running")], 2, 5, "open", [], [], 0),
        # two agree: accepted, the third not judged yet
        (
            [m("a", "completed", "x"), m("b", "completed", "x"), m("c", "running")],
            2,
            5,
            "agreed",
            ["a", "b"],
            [],
            0,
        ),
        # a liar first, then two honest
        (
            [m("a", "completed", "bad"), m("b", "completed", "x"), m("c", "completed", "x")],
            2,
            5,
            "agreed",
            ["b", "c"],
            ["a"],
            0,
        ),
        # 1 vs 1, one still running: enough left to reach the quorum
        ([m("a", "completed", "x"), m("b", "completed", "y"), m("c", "running")], 2, 5, "open", [], [], 0),
        # all three differ: two more can still make a quorum of 2 with one of them
        (
            [m("a", "completed", "x"), m("b", "completed", "y"), m("c", "completed", "z")],
            2,
            5,
            "open",
            [],
            [],
            1,
        ),
        # a failed replica leaves too few: one more starts
        ([m("a", "completed", "x"), m("b", "failed"), m("c", "pending")], 3, 5, "open", [], [], 1),
        # out of room and nothing left running: no quorum
        (
            [m("a", "completed", "x"), m("b", "completed", "y"), m("c", "failed")],
            2,
            3,
            "disagreed",
            [],
            [],
            0,
        ),
    ],
)
def test_decide(members, quorum, most, state, agreed, outliers, start) -> None:  # type: ignore[no-untyped-def]
    decision = decide(members, quorum=quorum, max_replicas=most, **EXACT)
    assert (decision.state, decision.agreed, decision.outliers, decision.start) == (
        state,
        agreed,
        outliers,
        start,
    )
    if state == "agreed":
        assert decision.winner == agreed[0]


def test_decide_after_agreement_judges_late_replicas_only() -> None:
    members = [m("a", "completed", "x"), m("b", "completed", "x"), m("c", "completed", "bad")]
    decision = decide(members, quorum=2, max_replicas=5, agreed_reference=out("x"), **EXACT)
    assert decision.agreed == ["a", "b"] and decision.outliers == ["c"] and decision.start == 0


def test_verification_contract_defaults_and_bounds() -> None:
    v = Verification()
    assert (v.replicas, v.needed, v.most) == (3, 2, 5)
    assert Verification(replicas=4).needed == 3
    with pytest.raises(ValueError, match="quorum"):
        Verification(replicas=2, quorum=3)
    with pytest.raises(ValueError, match="max_replicas"):
        Verification(replicas=4, max_replicas=3)


def test_reputation_score() -> None:
    assert score(0, 0, 0, 0, 0) == 0.5  # no record
    assert score(5, 0, 5, 0, 0) > 0.8
    assert score(0, 1, 1, 0, 0) < 0.45  # one outlier
    assert score(5, 0, 5, 0, 1) == pytest.approx(score(5, 0, 5, 0, 0) / 2, abs=1e-6)
    assert fade(8.0, 30 * 86400, 30 * 86400) == pytest.approx(4.0)


def test_credited_work_is_capped_by_the_agreeing_median() -> None:
    assert credited_work(10.0, [9.0, 10.0, 11.0], 1.5) == 10.0
    assert credited_work(100.0, [9.0, 10.0, 100.0], 1.5) == 15.0
    assert credited_work(3.0, [], 1.5) == 3.0
