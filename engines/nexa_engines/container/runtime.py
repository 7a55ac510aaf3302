"""Which container runtime a standalone worker has: podman first, then docker.

``NEXA_CONTAINER_RUNTIME`` forces the choice: ``podman``, ``docker``, a path to
either binary, or ``none`` (this worker runs no container jobs); unset or ``auto``
tries podman, then docker. A runtime counts only when it answers ``version``
(docker's daemon included), so a worker with a bare client does not claim
container jobs. The probe runs once per process and setting.

``NEXA_CONTAINER_OCI_RUNTIME`` (podman only) names the OCI runtime podman uses
(``--runtime``, e.g. ``runc`` on hosts where crun refuses a hybrid cgroup layout);
``NEXA_CONTAINER_PULL`` is ``never`` (the default: the image must already be on
the worker) or ``missing`` (pull it when it is absent).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

RUNTIME_SETTING = "NEXA_CONTAINER_RUNTIME"
OCI_RUNTIME_SETTING = "NEXA_CONTAINER_OCI_RUNTIME"
PULL_SETTING = "NEXA_CONTAINER_PULL"
NETWORK_SETTING = "NEXA_CONTAINER_ALLOW_NETWORK"
PROBE_TIMEOUT_S = 10.0

RuntimeKind = Literal["podman", "docker"]
PullPolicy = Literal["never", "missing"]


@dataclass(frozen=True)
class ContainerRuntime:
    """A runtime that answered: its kind, the binary, its version and podman's OCI runtime."""

    kind: RuntimeKind
    path: str
    version: str
    oci_runtime: str | None = None


def _kind_of(binary: str) -> RuntimeKind:
    return "docker" if "docker" in Path(binary).name else "podman"


def _probe(kind: RuntimeKind, path: str) -> ContainerRuntime | str:
    # podman is daemonless (its client version is enough); docker must reach its daemon.
    field = "{{.Client.Version}}" if kind == "podman" else "{{.Server.Version}}"
    try:
        done = subprocess.run(
            [path, "version", "--format", field],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{path} version: {exc}"
    version = done.stdout.strip()
    if done.returncode != 0 or not version:
        detail = (done.stderr or done.stdout).strip().splitlines()
        return f"{path} version exited {done.returncode}: {detail[-1] if detail else 'no output'}"
    oci = (os.environ.get(OCI_RUNTIME_SETTING) or "").strip() or None
    return ContainerRuntime(kind, path, version[:64], oci if kind == "podman" else None)


@lru_cache(maxsize=8)
def _find(choice: str, path_env: str, oci: str) -> ContainerRuntime | str:
    del oci  # part of the cache key only: _probe reads it
    if choice in ("none", "off", "false", "0"):
        return f"{RUNTIME_SETTING}={choice}: this worker runs no container jobs"
    if choice in ("", "auto"):
        candidates: list[RuntimeKind] = ["podman", "docker"]
    elif choice in ("podman", "docker"):
        candidates = [choice]  # type: ignore[list-item]
    elif "/" in choice:
        found = _probe(_kind_of(choice), choice)
        return found if isinstance(found, ContainerRuntime) else f"{RUNTIME_SETTING}={choice}: {found}"
    else:
        return f"{RUNTIME_SETTING}={choice!r} is not podman, docker, none, auto or a path to a runtime"
    reasons = []
    for kind in candidates:
        path = shutil.which(kind, path=path_env)
        if path is None:
            reasons.append(f"{kind} is not on PATH")
            continue
        found = _probe(kind, path)
        if isinstance(found, ContainerRuntime):
            return found
        reasons.append(found)
    return "no usable container runtime: " + "; ".join(reasons)


def find_runtime() -> ContainerRuntime | str:
    """The runtime container jobs use here, or why there is none (cached per setting and PATH)."""
    raw = (os.environ.get(RUNTIME_SETTING) or "").strip()
    return _find(
        raw if "/" in raw else raw.lower(),
        os.environ.get("PATH", os.defpath),
        os.environ.get(OCI_RUNTIME_SETTING, ""),
    )


def pull_policy() -> PullPolicy:
    """``never`` unless the worker's owner allows pulling a missing image (``NEXA_CONTAINER_PULL=missing``)."""
    return "missing" if (os.environ.get(PULL_SETTING) or "").strip().lower() == "missing" else "never"


def network_allowed() -> bool:
    """Whether this node gives a container that asks for it a network (off unless its owner says
    ``NEXA_CONTAINER_ALLOW_NETWORK=1``): the runtime's default network reaches the node's own LAN and
    any cloud metadata endpoint."""
    return (os.environ.get(NETWORK_SETTING) or "").strip().lower() in ("1", "true", "yes", "on")


def unavailable() -> str | None:
    """Why this worker cannot run container jobs, or None when it can (the registry asks this)."""
    found = find_runtime()
    return found if isinstance(found, str) else None
