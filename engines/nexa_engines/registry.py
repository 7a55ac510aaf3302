"""Which engine runs which job type.

Engines are imported lazily by dotted path so that a worker without an engine's
heavy dependencies (torch for ``train``) still runs the others; asking for a
missing one raises ``EngineNotInstalled`` with a message a user can act on.
"""

from __future__ import annotations

import importlib
from typing import cast

from nexa.contracts import JobType
from nexa_engines.engine import EngineError, EngineFn

# job type -> (module, function, pip extra that provides its dependencies)
ENGINES: dict[JobType, tuple[str, str, str]] = {
    JobType.audit: ("nexa_engines.audit", "run", "engines"),
    JobType.train: ("nexa_engines.train", "run", "ml"),
    JobType.deploy: ("nexa_engines.deploy", "run", "ml"),
    JobType.distill: ("nexa_engines.distill", "run", "ml"),
    JobType.generate: ("nexa_engines.generate", "run", "ml"),
    JobType.evaluate: ("nexa_engines.evaluate", "run", "ml"),
    JobType.container: ("nexa_engines.container", "run", "engines"),
}
# Job types whose engine also needs something on the machine (a container runtime): a worker
# claims them only where ``<module>.unavailable()`` finds it, so such a job waits for one that has it.
HOST_DEPENDENT: frozenset[JobType] = frozenset({JobType.container})


class EngineNotInstalled(EngineError):
    def __init__(self, job_type: str, detail: str) -> None:
        super().__init__("engine_not_installed", detail, retryable=False)
        self.job_type = job_type


def load_engine(job_type: JobType | str) -> EngineFn:
    """Import and return the engine for ``job_type`` or raise ``EngineNotInstalled``."""
    jt = JobType(job_type)
    entry = ENGINES.get(jt)
    if entry is None:
        raise EngineNotInstalled(
            jt.value,
            f"no engine for job type '{jt.value}' is installed on this worker "
            f"(this Nexa version has engines for: {', '.join(sorted(t.value for t in ENGINES))})",
        )
    module_name, fn_name, extra = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineNotInstalled(
            jt.value,
            f"the '{jt.value}' engine cannot be imported on this worker ({exc}); "
            f"install it with: pip install 'nexa-forge[{extra}]'",
        ) from exc
    unavailable = getattr(module, "unavailable", None)
    reason = unavailable() if callable(unavailable) else None
    if reason:
        raise EngineNotInstalled(jt.value, f"the '{jt.value}' engine cannot run on this worker: {reason}")
    return cast(EngineFn, getattr(module, fn_name))


def installed_job_types() -> list[JobType]:
    """Job types whose engine imports cleanly here."""
    found = []
    for jt in ENGINES:
        try:
            load_engine(jt)
        except EngineNotInstalled:
            continue
        found.append(jt)
    return found


def claimable_job_types() -> list[JobType]:
    """What a worker claims when told nothing: every type (a missing engine then fails the job at once
    with ``engine_not_installed``) except the host-dependent ones this machine cannot run."""
    installed = set(installed_job_types())
    return [jt for jt in JobType if jt not in HOST_DEPENDENT or jt in installed]
