"""Attempt tokens: what the operator mints, only the same secret verifies, and nothing in it can be edited."""

from __future__ import annotations

import base64
import json

import pytest

from nexa.attempttokens import InvalidAttemptToken, looks_like_token, mint, verify

JOB = "job_aaaaaaaaaaaaaaaaaaaaaaaaaa"


def test_a_token_names_its_job_attempt_and_tenant() -> None:
    token = mint(b"secret", JOB, 2, "tnt_1")
    assert looks_like_token(token)
    claim = verify(b"secret", token)
    assert (claim.job_id, claim.attempt, claim.tenant) == (JOB, 2, "tnt_1")


def _forge(token: str, **changes: object) -> str:
    body, mac = token.removeprefix("nexa_at_").split(".")
    doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    doc.update(changes)
    edited = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    return f"nexa_at_{edited}.{mac}"


@pytest.mark.parametrize(
    "bad",
    [
        lambda t: _forge(t, t="tnt_other"),  # another tenant
        lambda t: _forge(t, a=3),  # a later attempt
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # a changed signature
        lambda t: mint(b"other secret", JOB, 2, "tnt_1"),  # another secret
        lambda t: t.split(".")[0],  # no signature
        lambda t: "nexa_at_" + "x" * 2000,  # too long
        lambda t: "nexaw_notatoken",
    ],
)
def test_anything_edited_or_foreign_is_refused(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidAttemptToken):
        verify(b"secret", bad(mint(b"secret", JOB, 2, "tnt_1")))


def test_no_secret_no_tokens() -> None:
    with pytest.raises(ValueError):
        mint(b"", JOB, 1, "t")
    with pytest.raises(InvalidAttemptToken):
        verify(b"", mint(b"s", JOB, 1, "t"))
