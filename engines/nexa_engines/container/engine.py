"""The container engine (standalone workers): run the job's image with podman or docker.

The runtime is found by ``nexa_engines.container.runtime``; the argv comes from
``nexa_engines.container.command``. Inputs are resolved for the job's tenant like
every dataset reference (the worker has already checked them) and mounted
read-only under ``/inputs``; whatever the container leaves in ``/outputs`` becomes
one dataset artifact whose manifest holds every file's SHA-256. The container's
stdout and stderr stream into the job's log; cancelling the job or passing
``timeout_seconds`` kills the container; a non-zero exit is ``container_failed``
(``container_oom`` when the memory limit killed it), neither retried.
"""

from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
import threading
import time
from collections import deque
from pathlib import Path, PurePosixPath
from typing import IO, Any

from nexa.contracts import ContainerSpec, ErrorCode, InputSource
from nexa.contracts.artifacts import MANIFEST_NAME
from nexa.contracts.refs import artifact_ref_uri, parse_reference
from nexa.ids import new_id
from nexa_engines.container.command import (
    INPUTS_DIR,
    OUTPUTS_DIR,
    PIDS_LIMIT,
    Mount,
    UnsafeMount,
    container_name,
    image_argv,
    kill_argv,
    oom_argv,
    run_argv,
)
from nexa_engines.container.runtime import (
    NETWORK_SETTING,
    ContainerRuntime,
    find_runtime,
    network_allowed,
    pull_policy,
)
from nexa_engines.engine import EngineContext, EngineError
from nexa_store.datasets import DatasetRefError, check_dataset_ref, fetch_dataset

POLL_S = 0.25
METER_EVERY_S = 5.0
STDERR_TAIL_LINES = 20
MAX_LOG_LINE = 8192
CLI_TIMEOUT_S = 60.0


def _cli(argv: list[str], timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
    )


def _rlimits() -> dict[str, tuple[int, int]]:
    """Open files as the worker itself may have them, and processes up to the pids limit.

    Root podman asks for nofile=1048576 and a high nproc by default, which a host with lower
    hard limits refuses (``setrlimit: Operation not permitted``); conmon, whose limits the
    container starts from, also runs with a lower nproc than the worker (32768 with podman 4.3).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    found = {}
    if hard != resource.RLIM_INFINITY:
        found["nofile"] = (hard if soft == resource.RLIM_INFINITY else soft, hard)
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    cap = PIDS_LIMIT if hard == resource.RLIM_INFINITY else min(hard, PIDS_LIMIT)
    found["nproc"] = (cap, cap)
    return found


def _copy_into(source: Path, dest: Path) -> None:
    """Copy a resolved input (a file, or a directory view of pinned links) as plain files."""
    if source.is_dir():
        shutil.copytree(source, dest, symlinks=False)
    else:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest / source.name)


def _stage_inputs(ctx: EngineContext, spec: ContainerSpec) -> tuple[list[Mount], list[InputSource]]:
    """Each input as a read-only mount, and as the output manifest's input record."""
    mounts: list[Mount] = []
    sources: list[InputSource] = []
    staged = ctx.workdir / "container-inputs"
    for index, uri in enumerate(spec.inputs):
        parsed = parse_reference(uri, "dataset")
        try:
            if parsed.form == "artifact":
                # A stored dataset is mounted whole (its files and manifest), verified first.
                check_dataset_ref(uri, store=ctx.store, access=ctx.access)
                directory = ctx.store.fetch(parsed.value, staged / parsed.value)
                manifest = ctx.store.read_manifest(parsed.value, verify=False)
                data = next((f for f in manifest.files if f.path != MANIFEST_NAME), None)
                mounts.append(Mount(directory, INPUTS_DIR / parsed.value))
                sources.append(
                    InputSource(uri=uri, sha256=data.sha256 if data else None, artifact_id=parsed.value)
                )
                continue
            resolved = fetch_dataset(uri, store=ctx.store, access=ctx.access, workdir=ctx.workdir)
        except DatasetRefError as exc:
            raise EngineError(exc.code, f"inputs.{index}: {exc.message}") from exc
        # Local, s3 and hub inputs are copied out of their pinned views: the container sees
        # plain files, never links back into the worker's descriptors or the host.
        target = staged / str(index)
        _copy_into(resolved.path, target)
        mounts.append(Mount(target, INPUTS_DIR / str(index)))
        sources.append(InputSource(uri=uri, sha256=resolved.sha256, artifact_id=resolved.artifact_id))
        ctx.log(f"input {index}: {uri} at {INPUTS_DIR / str(index)}")
    return mounts, sources


def _pump(stream: IO[bytes], ctx: EngineContext, prefix: str, tail: deque[str] | None) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        for start in range(0, max(1, len(line)), MAX_LOG_LINE):
            piece = line[start : start + MAX_LOG_LINE]
            ctx.log(prefix + piece)
            if tail is not None:
                tail.append(piece)
    stream.close()


def _image_id(runtime: ContainerRuntime, image: str, pull: str) -> str | None:
    done = _cli(image_argv(runtime, image))
    if done.returncode == 0:
        return done.stdout.strip()[:200] or None
    if pull == "never":
        raise EngineError(
            "image_not_found",
            f"image {image!r} is not on this worker and pulling is off (--pull=never): load it here "
            f"first ({runtime.kind} load / {runtime.kind} import), or let the worker pull missing "
            "images with NEXA_CONTAINER_PULL=missing",
        )
    return None


def _kill(runtime: ContainerRuntime, name: str, process: subprocess.Popen[bytes]) -> None:
    try:
        _cli(kill_argv(runtime, name))
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _collect_outputs(ctx: EngineContext, outputs: Path, target: Path) -> tuple[int, int]:
    """Move the regular files the container wrote into ``target``; links and specials are left out."""
    files = size = 0
    for current, dirs, names in os.walk(outputs, followlinks=False):
        for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(current, d))]:
            path = Path(current, name)
            rel = PurePosixPath(path.relative_to(outputs).as_posix())
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                ctx.log(f"[nexa container] left out /outputs/{rel}: not a regular file")
                continue
            if rel.as_posix() == MANIFEST_NAME:
                ctx.log(f"[nexa container] left out /outputs/{MANIFEST_NAME}: the name is the manifest's")
                continue
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(path, dest)
            except OSError:
                shutil.copyfile(path, dest, follow_symlinks=False)
            # No setuid/setgid bit and no write for others survives into the store.
            os.chmod(dest, stat.S_IMODE(info.st_mode) & 0o755)
            files += 1
            size += info.st_size
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(current, d))]
    return files, size


def check_network(spec: ContainerSpec) -> None:
    """Refuse a job that asks for a network on a node whose owner did not allow one."""
    if spec.network and not network_allowed():
        raise EngineError(
            "network_not_allowed",
            f"the job asks for a network, and this node gives containers none ({NETWORK_SETTING} is not set "
            "by its owner); run it without network: true, or on a node that allows it",
            retryable=False,
        )


def run(ctx: EngineContext, spec: ContainerSpec) -> dict[str, Any]:
    """Run ``spec.image``; commit ``/outputs`` as a dataset artifact; return exit code and output id."""
    if not isinstance(spec, ContainerSpec):
        spec = ContainerSpec.model_validate(spec)
    found = find_runtime()
    if isinstance(found, str):
        raise EngineError(ErrorCode.engine_not_installed, found, retryable=True)
    runtime = found
    check_network(spec)
    pull = pull_policy()
    ctx.progress(0.0, "preparing the container")
    image_id = _image_id(runtime, spec.image, pull)
    mounts, sources = _stage_inputs(ctx, spec)
    outputs = ctx.workdir / "container-outputs"
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.mkdir(parents=True)
    mounts.append(Mount(outputs, OUTPUTS_DIR, read_only=False))
    name = container_name(ctx.job_id, ctx.attempt)
    env = {**spec.env, "NEXA_JOB_ID": ctx.job_id, "NEXA_ATTEMPT": str(ctx.attempt)}
    env.setdefault("HOME", "/tmp")
    try:
        argv = run_argv(
            runtime,
            spec,
            name=name,
            mounts=mounts,
            env=env,
            pull=pull,
            ulimits=_rlimits(),
            labels={"nexa.job": ctx.job_id, "nexa.attempt": str(ctx.attempt)},
        )
    except UnsafeMount as exc:
        raise EngineError("container_runtime_error", str(exc), retryable=False) from exc
    _cli(kill_argv(runtime, name))  # a leftover of this very attempt (a worker that died mid-run)
    ctx.log(
        f"[nexa container] {runtime.kind} {runtime.version}: {spec.image} as {name}, "
        f"cpus={spec.resources.cpu:g} memory={spec.resources.memory_gb:g}GiB "
        f"network={'on' if spec.network else 'none'} pull={pull}"
    )
    ctx.check_cancelled()
    started = time.monotonic()
    deadline = started + spec.timeout_seconds
    metered = started
    # Machine time as it is spent: wall time x the GPUs asked for, or x the CPUs when none.
    hours_per_second = (spec.resources.gpus or spec.resources.cpu) / 3600
    usage_kind = "gpu_hours" if spec.resources.gpus else "cpu_hours"
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
    )
    assert process.stdout is not None and process.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(process.stdout, ctx, "", None), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, ctx, "[stderr] ", tail), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    ctx.progress(0.05, f"running {spec.image}")
    stopped: str | None = None
    try:
        while process.poll() is None:
            if ctx.cancel_event.wait(POLL_S):
                stopped = "cancelled"
            elif time.monotonic() > deadline:
                stopped = "timeout"
            now = time.monotonic()
            if now - metered >= METER_EVERY_S or stopped:
                ctx.usage(usage_kind, (now - metered) * hours_per_second)
                metered = now
            if stopped:
                _kill(runtime, name, process)
                break
    except BaseException:
        _kill(runtime, name, process)
        raise
    finally:
        for pump in pumps:
            pump.join(timeout=10)
    now = time.monotonic()
    ctx.usage(usage_kind, (now - metered) * hours_per_second)
    duration = round(now - started, 3)
    exit_code = process.returncode
    oom = False
    if exit_code not in (0, None) and not stopped:
        done = _cli(oom_argv(runtime, name))
        oom = done.returncode == 0 and done.stdout.strip().lower() == "true"
    _cli(kill_argv(runtime, name))
    if stopped == "cancelled":
        ctx.check_cancelled()
    if stopped == "timeout":
        raise EngineError(
            ErrorCode.timeout,
            f"the container ran longer than timeout_seconds={spec.timeout_seconds} and was killed",
        )
    ctx.log(f"[nexa container] {name} exited {exit_code} after {duration:g}s")
    if exit_code != 0:
        last = " | ".join(tail)[-1500:]
        if oom:
            raise EngineError(
                "container_oom",
                f"the container was killed at its memory limit ({spec.resources.memory_gb:g} GiB); "
                "ask for more with resources.memory_gb",
            )
        if exit_code == 125:
            # The runtime itself failed (it reports its own errors with 125): maybe only this worker.
            raise EngineError(
                "container_runtime_error",
                f"{runtime.kind} could not run the container: {last}",
                retryable=True,
            )
        raise EngineError(
            "container_failed", f"the container exited with code {exit_code}" + (f": {last}" if last else "")
        )
    ctx.progress(0.95, "capturing /outputs")
    output_id: str | None = None
    files = size = 0
    if any(outputs.iterdir()):
        output_id = new_id("ds")
        writer = ctx.store.begin("dataset", output_id)
        try:
            files, size = _collect_outputs(ctx, outputs, writer.path)
            config = spec.model_dump(mode="json")
            config["env"] = sorted(spec.env)  # the names only: values may be secrets
            writer.commit(
                job_id=ctx.job_id,
                attempt=ctx.attempt,
                tenant_id=ctx.tenant_id,
                pipeline_id=ctx.pipeline_id,
                inputs=sources,
                config=config,
                metrics={"exit_code": exit_code, "files": files, "bytes": size, "image_id": image_id},
            )
        except BaseException:
            writer.abort()
            raise
        ctx.produced_artifacts.append(output_id)
        ctx.log(f"[nexa container] /outputs: {files} file(s), {size} bytes as {output_id}")
    ctx.progress(1.0, "container finished")
    return {
        "exit_code": exit_code,
        "image": spec.image,
        "image_id": image_id,
        "runtime": f"{runtime.kind} {runtime.version}",
        "duration_seconds": duration,
        "output_dataset_id": output_id,
        "output_uri": artifact_ref_uri(output_id) if output_id else None,
        "output_files": files,
        "output_bytes": size,
    }
