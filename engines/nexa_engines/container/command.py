"""The runtime's argv for one container job (pure: a spec and paths in, a list of strings out).

What every run gets: a name unique to the job and attempt, ``--pull=never`` unless
the worker allows pulls, the spec's CPU and memory as hard limits (no swap beyond
the memory), no network unless the spec asks, every capability dropped,
``no-new-privileges``, a read-only root filesystem with a tmpfs ``/tmp``, the
inputs mounted read-only under ``/inputs`` and one writable ``/outputs``. ``command``
replaces the image's entrypoint and ``args`` its default arguments, as in a
Kubernetes pod.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nexa.contracts import ContainerSpec
from nexa_engines.container.runtime import ContainerRuntime, PullPolicy

INPUTS_DIR = PurePosixPath("/inputs")
OUTPUTS_DIR = PurePosixPath("/outputs")
PIDS_LIMIT = 4096
# Characters that would change the meaning of a ``--volume src:dst:ro`` argument.
_VOLUME_UNSAFE = (":", ",", "\n", "\x00")


@dataclass(frozen=True)
class Mount:
    """A host path and where the container sees it."""

    source: Path
    target: PurePosixPath
    read_only: bool = True


class UnsafeMount(ValueError):
    """A host path that cannot be written in a ``--volume`` argument."""


def container_name(job_id: str, attempt: int) -> str:
    """The container's name: the same for every try of one attempt, so a leftover is found and removed."""
    return f"nexa-{job_id}-{attempt}"


def volume_arg(mount: Mount) -> str:
    for path in (str(mount.source), str(mount.target)):
        if any(c in path for c in _VOLUME_UNSAFE) or not path.startswith("/"):
            raise UnsafeMount(f"cannot mount {path!r}: an absolute path without ':' or ',' is needed")
    return f"{mount.source}:{mount.target}:{'ro' if mount.read_only else 'rw'}"


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def run_argv(
    runtime: ContainerRuntime,
    spec: ContainerSpec,
    *,
    name: str,
    mounts: Sequence[Mount],
    env: Mapping[str, str],
    pull: PullPolicy = "never",
    ulimits: Mapping[str, tuple[int, int]] | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[str]:
    """``podman run …`` / ``docker run …`` for ``spec``; ``env`` is the container's whole environment."""
    res = spec.resources
    memory_mib = max(6, round(res.memory_gb * 1024))  # docker's smallest memory limit is 6 MiB
    argv = [runtime.path]
    if runtime.kind == "podman" and runtime.oci_runtime:
        argv += ["--runtime", runtime.oci_runtime]
    argv += [
        "run",
        "--name",
        name,
        f"--pull={pull}",
        f"--cpus={_number(res.cpu)}",
        f"--memory={memory_mib}m",
        f"--memory-swap={memory_mib}m",
        f"--pids-limit={PIDS_LIMIT}",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--read-only",
        "--tmpfs=/tmp:rw,nosuid,nodev",
    ]
    if not spec.network:
        argv.append("--network=none")
    if res.gpus > 0:
        # docker's NVIDIA runtime takes a count; podman uses the CDI devices nvidia-ctk generates.
        argv += [f"--gpus={res.gpus}"] if runtime.kind == "docker" else ["--device=nvidia.com/gpu=all"]
    for key, (soft, hard) in sorted((ulimits or {}).items()):
        argv.append(f"--ulimit={key}={soft}:{hard}")
    for key, value in sorted((labels or {}).items()):
        argv.append(f"--label={key}={value}")
    for key, value in sorted(env.items()):
        argv.append(f"--env={key}={value}")
    for mount in mounts:
        argv.append(f"--volume={volume_arg(mount)}")
    if spec.command:
        argv.append(f"--entrypoint={spec.command[0]}")
    # '--': the image is never read as an option, whatever it is (the contract refuses a leading '-' too).
    argv += ["--", spec.image]
    argv += list(spec.command[1:]) + list(spec.args)
    return argv


def kill_argv(runtime: ContainerRuntime, name: str) -> list[str]:
    """Stop and remove the container at once (SIGKILL, no grace); exits non-zero when there is none."""
    if runtime.kind == "podman":
        return [runtime.path, "rm", "--force", "--time=0", name]
    return [runtime.path, "rm", "--force", name]


def image_argv(runtime: ContainerRuntime, image: str) -> list[str]:
    """Prints the image's id when it is on this machine; exits non-zero when it is not."""
    return [runtime.path, "image", "inspect", "--format", "{{.Id}}", "--", image]


def oom_argv(runtime: ContainerRuntime, name: str) -> list[str]:
    """Prints ``true`` when the kernel killed the container for its memory limit."""
    return [runtime.path, "inspect", "--format", "{{.State.OOMKilled}}", name]
