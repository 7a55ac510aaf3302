"""An append-only, hash-chained ledger: one mechanism for every record that must not be rewritten.

A stream (``usage:<tenant id>``, later ``credits:<node>`` and ``audit``) is a sequence of
entries numbered from 1. Each entry's hash is SHA-256 over its stream, number, kind,
subject, canonical JSON payload and the previous entry's hash (64 zeros for the first),
so editing, reordering or deleting any entry is found by walking the stream
(``verify``). Appends to one stream are serialized by the unique (stream, seq) key: a
writer that loses the race reads the new head and tries again.

Usage is chained as it is recorded (``queue.record_usage``), in the same transaction,
so the bill (computed from the usage table) can be checked against the chain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nexa_gateway.db import LedgerEntry, NodeRecord, Usage

GENESIS = "0" * 64
APPEND_ATTEMPTS = 20


def entry_hash(
    stream: str, seq: int, kind: str, subject: str, payload: dict[str, Any], prev_hash: str
) -> str:
    """The chained hash of one entry (pure: the same inputs give the same hash on every machine)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    material = "\n".join((stream, str(seq), kind, subject, canonical, prev_hash))
    return hashlib.sha256(material.encode()).hexdigest()


def _head(session: Session, stream: str) -> tuple[int, str]:
    last = session.execute(
        select(LedgerEntry.seq, LedgerEntry.hash)
        .where(LedgerEntry.stream == stream)
        .order_by(LedgerEntry.seq.desc())
        .limit(1)
    ).first()
    return (0, GENESIS) if last is None else (int(last[0]), str(last[1]))


def append(session: Session, stream: str, kind: str, subject: str, payload: dict[str, Any]) -> LedgerEntry:
    """Add an entry at the head of ``stream`` (inside the caller's transaction)."""
    for _ in range(APPEND_ATTEMPTS):
        seq, prev = _head(session, stream)
        entry = LedgerEntry(
            stream=stream,
            seq=seq + 1,
            kind=kind,
            subject=subject,
            payload=payload,
            prev_hash=prev,
            hash=entry_hash(stream, seq + 1, kind, subject, payload, prev),
        )
        try:
            with session.begin_nested():
                session.add(entry)
                session.flush()
            return entry
        except IntegrityError:
            continue  # another writer took this position: chain after it
    raise RuntimeError(f"ledger stream {stream}: could not append after {APPEND_ATTEMPTS} tries")


def usage_stream(tenant_id: str) -> str:
    return f"usage:{tenant_id}"


def chain_usage(session: Session, row: Usage) -> None:
    """Chain a just-recorded usage row into its tenant's stream."""
    append(
        session,
        usage_stream(row.tenant_id),
        "usage",
        row.job_id,
        {
            "usage_id": row.id,
            "job_id": row.job_id,
            "attempt": row.attempt,
            "kind": row.kind,
            "amount": row.amount,
        },
    )


@dataclass
class Verification:
    stream: str
    entries: int
    ok: bool
    problem: str | None = None  # what is wrong, and where, when not ok


def verify(session: Session, stream: str) -> Verification:
    """Walk ``stream`` from its first entry; for usage streams, also match each entry to its usage row."""
    prev, expected_seq, count = GENESIS, 1, 0
    usage_rows: dict[int, Usage] = {}
    if stream.startswith("usage:"):
        tenant = stream.split(":", 1)[1]
        usage_rows = {u.id: u for u in session.scalars(select(Usage).where(Usage.tenant_id == tenant))}
    chained: set[int] = set()
    credited = 0.0
    for entry in session.scalars(
        select(LedgerEntry).where(LedgerEntry.stream == stream).order_by(LedgerEntry.seq)
    ):
        count += 1
        if entry.seq != expected_seq:
            return Verification(stream, count, False, f"entry {expected_seq} is missing")
        if entry.prev_hash != prev or entry.hash != entry_hash(
            stream, entry.seq, entry.kind, entry.subject, entry.payload, entry.prev_hash
        ):
            return Verification(stream, count, False, f"entry {entry.seq} does not match its hash")
        # Other entries of the stream (artifact_deleted, job_deleted) are checked by their hashes only.
        if usage_rows and entry.kind == "usage":
            usage_id = int(entry.payload.get("usage_id", 0))
            row = usage_rows.get(usage_id)
            if row is None or (row.kind, row.amount, row.job_id) != (
                entry.payload.get("kind"),
                entry.payload.get("amount"),
                entry.payload.get("job_id"),
            ):
                return Verification(
                    stream, count, False, f"usage row {usage_id} differs from entry {entry.seq}"
                )
            chained.add(usage_id)
        if stream.startswith("credits:"):
            credited += float(entry.payload.get("credits", 0.0))
        prev, expected_seq = entry.hash, expected_seq + 1
    unchained = sorted(set(usage_rows) - chained)
    if unchained:
        return Verification(stream, count, False, f"usage rows {unchained[:10]} are not in the chain")
    if stream.startswith("credits:"):
        record = session.get(NodeRecord, stream.split(":", 1)[1])
        balance = record.credits if record is not None else 0.0
        if abs(balance - credited) > 1e-6 * max(1.0, abs(credited)):
            return Verification(
                stream,
                count,
                False,
                f"the balance {balance} differs from the entries' sum {round(credited, 6)}",
            )
    return Verification(stream, count, True)
