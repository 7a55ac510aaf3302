"""Nodes' signed reports: DSSE's encoding, signing, and every way a signature must not pass."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from nexa.contracts import FailReport, ResultReport
from nexa.contracts.workers import DsseSignature, SignedEnvelope
from nexa_store.envelopes import KEY_FILE, PAYLOAD_TYPE, EnvelopeError, NodeKey, pae, verify_report

REPORT = ResultReport(attempt=2, result={"score": 0.9}, artifacts=["ds_" + "a" * 26], usage=[])


def test_pae_is_dsse_v1() -> None:
    # The DSSE specification's own example encoding.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_a_signed_report_verifies_and_any_change_fails(tmp_path: Path) -> None:
    key = NodeKey.load_or_create(tmp_path)
    envelope = key.sign("complete", "job_1", 2, "wrk_1", REPORT)
    assert envelope.payloadType == PAYLOAD_TYPE and envelope.signatures[0].keyid == key.public_hex
    verify_report(envelope, key.public_hex, "complete", "job_1", 2, "wrk_1", REPORT)
    changed = REPORT.model_copy(update={"result": {"score": 1.0}})
    cases = {
        "another result": ("complete", "job_1", 2, "wrk_1", changed),
        "a replay to the next attempt": ("complete", "job_1", 3, "wrk_1", REPORT),
        "another job": ("complete", "job_2", 2, "wrk_1", REPORT),
        "another node": ("complete", "job_1", 2, "wrk_2", REPORT),
        "a failure instead": ("fail", "job_1", 2, "wrk_1", REPORT),
    }
    for what, (kind, job, attempt, worker, report) in cases.items():
        with pytest.raises(EnvelopeError, match="signs another report"):
            verify_report(envelope, key.public_hex, kind, job, attempt, worker, report)  # type: ignore[arg-type]
        assert what
    other = NodeKey.load_or_create(tmp_path / "other")
    with pytest.raises(EnvelopeError, match="no signature"):
        verify_report(envelope, other.public_hex, "complete", "job_1", 2, "wrk_1", REPORT)
    forged = envelope.model_copy(
        update={
            "signatures": [
                envelope.signatures[0].model_copy(update={"sig": base64.b64encode(b"x" * 64).decode()})
            ]
        }
    )
    with pytest.raises(EnvelopeError, match="no signature"):
        verify_report(forged, key.public_hex, "complete", "job_1", 2, "wrk_1", REPORT)
    with pytest.raises(EnvelopeError, match="not signed"):
        verify_report(None, key.public_hex, "complete", "job_1", 2, "wrk_1", REPORT)
    fail = FailReport(attempt=1, code="engine_crashed", message="boom", retryable=True)
    verify_report(
        key.sign("fail", "job_1", 1, "wrk_1", fail), key.public_hex, "fail", "job_1", 1, "wrk_1", fail
    )


def test_the_node_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = NodeKey.load_or_create(state)
    assert (os.stat(state / KEY_FILE).st_mode & 0o777) == 0o600
    assert NodeKey.load_or_create(state).public_hex == first.public_hex
    (state / KEY_FILE).chmod(0o644)
    with pytest.raises(EnvelopeError, match="readable by others"):
        NodeKey.load_or_create(state)


def test_a_node_on_an_older_version_still_signs_the_same_report(tmp_path: Path) -> None:
    """The gateway compares the signed report as a model: a field it added since (with a default)
    that the node's version does not send does not make an honest report fail."""
    import json

    key = NodeKey.load_or_create(tmp_path)
    old_shape = REPORT.model_dump(mode="json", exclude={"envelope", "usage"})
    statement = {
        "kind": "complete",
        "job_id": "job_1",
        "attempt": 2,
        "worker_id": "wrk_1",
        "report": old_shape,
    }
    payload = json.dumps(statement, sort_keys=True).encode()
    envelope = SignedEnvelope(
        payload=base64.b64encode(payload).decode(),
        payloadType=PAYLOAD_TYPE,
        signatures=[
            DsseSignature(sig=base64.b64encode(key.key.sign_bytes(pae(PAYLOAD_TYPE, payload))).decode())
        ],
    )
    verify_report(envelope, key.public_hex, "complete", "job_1", 2, "wrk_1", REPORT)


def test_a_state_dir_others_can_write_or_a_linked_key_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(EnvelopeError, match="writable by no one else"):
        NodeKey.load_or_create(shared)
    real = NodeKey.load_or_create(tmp_path / "real")
    linked = tmp_path / "linked"
    linked.mkdir(mode=0o700)
    (linked / KEY_FILE).symlink_to(tmp_path / "real" / KEY_FILE)
    with pytest.raises(OSError):
        NodeKey.load_or_create(linked)  # O_NOFOLLOW: a key is never read through a link
    assert real.public_hex


def test_a_key_proof_shows_the_node_holds_the_key_and_is_fresh(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from nexa_store.envelopes import EnvelopeError, NodeKey, verify_key_proof

    key, other = NodeKey.load_or_create(tmp_path / "a"), NodeKey.load_or_create(tmp_path / "b")
    now = datetime.now(UTC)
    verify_key_proof(key.key_proof(), key.public_hex, now)
    for envelope, public in ((None, key.public_hex), (other.key_proof(), key.public_hex)):
        with pytest.raises(EnvelopeError):
            verify_key_proof(envelope, public, now)
    with pytest.raises(EnvelopeError, match="stale"):
        verify_key_proof(key.key_proof(), key.public_hex, now + timedelta(days=2))
    # A proof is not a report: its signature over another statement does not pass as one.
    report_envelope = key.sign("logs", "", 0, "", key.key_proof())
    with pytest.raises(EnvelopeError):
        verify_key_proof(report_envelope, key.public_hex, now)
