"""Prefixed, unguessable identifiers.

Every object a user can name has an id of the form ``<prefix>_<26 base32 chars>``:
128 bits from the OS CSPRNG, lowercase so that the suffix is also a valid
Kubernetes name fragment.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Final, Literal, get_args

IdPrefix = Literal[
    "job", "ds", "ckpt", "ev", "dp", "key", "wrk", "tnt", "art", "ntk", "log", "wh", "msg", "pl"
]

PREFIXES: Final[tuple[str, ...]] = get_args(IdPrefix)

_SUFFIX_LEN: Final = 26
_ID_RE: Final = re.compile(r"^(?P<prefix>[a-z]+)_(?P<suffix>[a-z2-7]{26})\Z")  # \Z: no trailing newline


def new_id(prefix: IdPrefix) -> str:
    """Return a fresh id such as ``job_3k2...``; 128 random bits."""
    raw = secrets.token_bytes(16)
    suffix = base64.b32encode(raw).decode("ascii").rstrip("=").lower()
    return f"{prefix}_{suffix[:_SUFFIX_LEN]}"


def derived_id(prefix: IdPrefix, *parts: str) -> str:
    """The id ``parts`` always map to: ``<prefix>_`` and 26 base32 characters of their SHA-256.

    For ids that must be the same on every try (an idempotency key's job, a NexaJob
    made by hand, a deployment's helper objects); ``parts`` are joined with NUL, so
    ``("a", "bc")`` and ``("ab", "c")`` differ.
    """
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return f"{prefix}_{base64.b32encode(digest).decode('ascii').lower()[:_SUFFIX_LEN]}"


def is_id(value: str, prefix: IdPrefix | None = None) -> bool:
    """True when ``value`` is a well-formed id (of ``prefix`` when given)."""
    match = _ID_RE.match(value)
    if match is None or match.group("prefix") not in PREFIXES:
        return False
    return prefix is None or match.group("prefix") == prefix


def id_prefix(value: str) -> str | None:
    """The prefix of a well-formed id, else ``None``."""
    match = _ID_RE.match(value)
    if match is None or match.group("prefix") not in PREFIXES:
        return None
    return match.group("prefix")
