"""The engine interface: what every job type's implementation receives and returns.

An engine is a plain function ``run(ctx, spec) -> dict``. It reads inputs through
``ctx``, writes outputs through ``ctx.store``, reports progress, logs and usage
through ``ctx``, and returns the job's small JSON result. It never knows whether
a local worker, a remote worker or a Kubernetes Job called it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nexa.contracts.catalog import CatalogEntry

if TYPE_CHECKING:
    from nexa_store.access import Access
    from nexa_store.base import ArtifactStore
    from nexa_store.signing import PlatformTrust


class EngineError(Exception):
    """A failure the engine understood; ``code`` becomes the job's error code."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class JobCancelled(Exception):
    """Raised inside an engine (by ``ctx.check_cancelled``) when the user cancelled the job."""


class Reporter(Protocol):
    """Where an engine's progress, logs and usage go (the worker, or a test)."""

    def progress(self, fraction: float, message: str | None = None) -> None: ...

    def log(self, line: str) -> None: ...

    def usage(self, kind: str, amount: float) -> None: ...


@dataclass
class EngineContext:
    """Everything an engine may touch."""

    job_id: str
    attempt: int
    tenant_id: str
    store: ArtifactStore
    reporter: Reporter
    workdir: Path
    # Local directories this job's tenant may read here: the tenant's grants, already
    # narrowed to what this worker's owner allows (the worker trusts no claim for more).
    allowed_roots: list[Path] = field(default_factory=list)
    s3_buckets: list[str] = field(default_factory=list)
    # Scratch space of other jobs on this machine (a worker's work root): never an input.
    scratch_roots: list[Path] = field(default_factory=list)
    # Keys for the tenant's own deployments this job calls (handed over with the claim).
    endpoint_keys: dict[str, str] = field(default_factory=dict)
    # A deploy job's endpoint key as its SHA-256, when the gateway keeps the key (None: make one here).
    endpoint_key_sha256: str | None = None
    # The platform's model catalog (names like "Mistral-7B"), from the claim or the pod's settings.
    catalog: dict[str, CatalogEntry] = field(default_factory=dict)
    # Inputs named by id must carry the platform's signature (None: signing is off here).
    trust: PlatformTrust | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    # Why the platform stops the attempt (``budget_exceeded``), or None: a user's cancel, or running.
    # An engine keeps what it can of a platform stop (train commits a resumable checkpoint).
    stop_reason: Callable[[], str | None] = lambda: None
    produced_artifacts: list[str] = field(default_factory=list)
    # The pipeline whose step this job runs (its nexa.dev/pipeline label, which only the gateway
    # or the operator sets), recorded in every manifest it writes.
    pipeline_id: str | None = None

    @property
    def access(self) -> Access:
        """What this job may read; artifact ownership comes from the manifests (the store is the authority)."""
        from nexa_store.access import Access, protected_dirs

        return Access(
            tenant_id=self.tenant_id,
            local_roots=tuple(self.allowed_roots),
            s3_buckets=tuple(self.s3_buckets),
            protected=protected_dirs(self.store, [self.workdir, *self.scratch_roots]),
            trust=self.trust,
            job_id=self.job_id,
            catalog=self.catalog,
        )

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.reporter.progress(min(1.0, max(0.0, fraction)), message)

    def log(self, line: str) -> None:
        self.reporter.log(line)

    def usage(self, kind: str, amount: float) -> None:
        self.reporter.usage(kind, amount)

    def check_cancelled(self) -> None:
        """Call between units of work; raises ``JobCancelled`` once the user cancelled."""
        if self.cancel_event.is_set():
            raise JobCancelled(self.job_id)


EngineFn = Callable[[EngineContext, Any], dict[str, Any]]
