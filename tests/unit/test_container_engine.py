"""The container engine's pure parts: the runtime argv a spec gives, the runtime probe, the registry's
claim rule, the contract's new fields, and what cluster mode refuses."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from pydantic import ValidationError

from nexa.contracts import ContainerSpec, JobType
from nexa.contracts.nexajob import nexajob_object
from nexa.contracts.refs import job_references
from nexa_engines import registry
from nexa_engines.container import command, runtime
from nexa_engines.container.command import Mount, UnsafeMount, run_argv
from nexa_engines.container.runtime import ContainerRuntime
from nexa_operator import builders
from nexa_operator.config import OperatorConfig

PODMAN = ContainerRuntime("podman", "/usr/bin/podman", "4.3.1")
DOCKER = ContainerRuntime("docker", "/usr/bin/docker", "24.0")
DS = "ds_" + "a" * 26


def _argv(spec: ContainerSpec, rt: ContainerRuntime = PODMAN, **kw: Any) -> list[str]:
    kw.setdefault("mounts", [])
    kw.setdefault("env", {})
    return run_argv(rt, spec, name="nexa-job_x-1", **kw)


def test_the_argv_has_limits_no_network_and_never_pulls_by_default() -> None:
    spec = ContainerSpec(image="localhost/img:1", resources={"cpu": 1.5, "memory_gb": 0.25})
    argv = _argv(spec)
    assert argv[:4] == ["/usr/bin/podman", "run", "--name", "nexa-job_x-1"]
    for flag in (
        "--pull=never",
        "--cpus=1.5",
        "--memory=256m",
        "--memory-swap=256m",
        "--network=none",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--read-only",
    ):
        assert flag in argv
    assert argv[-1] == "localhost/img:1", "no command: the image's own entrypoint and arguments"


def test_network_command_args_env_mounts_ulimits_and_labels() -> None:
    spec = ContainerSpec(image="img:1", command=["/bin/sh", "-c"], args=["echo hi"], network=True)
    mounts = [
        Mount(Path("/w/in/ds_x"), PurePosixPath("/inputs/ds_x")),
        Mount(Path("/w/out"), PurePosixPath("/outputs"), read_only=False),
    ]
    argv = _argv(
        spec,
        mounts=mounts,
        env={"B": "2", "A": "x y"},
        pull="missing",
        ulimits={"nofile": (1024, 20000)},
        labels={"nexa.job": "job_x"},
    )
    assert "--network=none" not in argv and "--pull=missing" in argv
    assert "--volume=/w/in/ds_x:/inputs/ds_x:ro" in argv and "--volume=/w/out:/outputs:rw" in argv
    assert "--ulimit=nofile=1024:20000" in argv and "--label=nexa.job=job_x" in argv
    assert argv.index("--env=A=x y") < argv.index("--env=B=2")
    # command[0] replaces the entrypoint; the rest of command and args follow the image.
    assert argv[-5:] == ["--entrypoint=/bin/sh", "--", "img:1", "-c", "echo hi"]


def test_podman_gets_its_oci_runtime_and_docker_its_gpus() -> None:
    spec = ContainerSpec(image="img:1", resources={"gpus": 2})
    podman = _argv(spec, ContainerRuntime("podman", "podman", "4", oci_runtime="runc"))
    assert podman[:3] == ["podman", "--runtime", "runc"] and "--device=nvidia.com/gpu=all" in podman
    docker = _argv(spec, DOCKER)
    assert "--runtime" not in docker and "--gpus=2" in docker


@pytest.mark.parametrize("bad", ["/a:b", "/a,b", "relative"])
def test_a_path_a_volume_argument_cannot_hold_is_refused(bad: str) -> None:
    with pytest.raises(UnsafeMount):
        command.volume_arg(Mount(Path(bad), PurePosixPath("/inputs/0")))


def test_kill_names_and_image_checks() -> None:
    assert command.container_name("job_abc", 2) == "nexa-job_abc-2"
    assert command.kill_argv(PODMAN, "n") == ["/usr/bin/podman", "rm", "--force", "--time=0", "n"]
    assert command.kill_argv(DOCKER, "n") == ["/usr/bin/docker", "rm", "--force", "n"]
    assert command.image_argv(PODMAN, "img:1")[-1] == "img:1"


def _fake_bin(directory: Path, name: str, script: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def test_the_probe_prefers_podman_honours_the_setting_and_explains_absence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_bin(tmp_path, "podman", "echo 4.3.1\n")
    _fake_bin(tmp_path, "docker", "echo 'Cannot connect to the Docker daemon' >&2; exit 1\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(runtime.RUNTIME_SETTING, raising=False)
    found = runtime.find_runtime()
    assert isinstance(found, ContainerRuntime) and found.kind == "podman" and found.version == "4.3.1"
    monkeypatch.setenv(runtime.RUNTIME_SETTING, "docker")
    why = runtime.find_runtime()
    assert isinstance(why, str) and "Cannot connect to the Docker daemon" in why
    monkeypatch.setenv(runtime.RUNTIME_SETTING, "none")
    assert "runs no container jobs" in str(runtime.unavailable())
    monkeypatch.setenv(runtime.RUNTIME_SETTING, "auto")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert "podman is not on PATH" in str(runtime.unavailable())


def test_a_worker_without_a_runtime_does_not_claim_container_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runtime.RUNTIME_SETTING, "none")
    assert JobType.container not in registry.installed_job_types()
    assert JobType.container not in registry.claimable_job_types()
    assert JobType.audit in registry.claimable_job_types()
    with pytest.raises(registry.EngineNotInstalled, match="runs no container jobs"):
        registry.load_engine(JobType.container)


def test_the_spec_bounds_inputs_and_they_are_references() -> None:
    spec = ContainerSpec(image="img:1", inputs=[DS, "/data/x.csv"])
    assert [(r.field, r.value) for r in job_references(spec)] == [
        ("inputs.0", DS),
        ("inputs.1", "/data/x.csv"),
    ]
    with pytest.raises(ValidationError, match="same dataset twice"):
        ContainerSpec(image="img:1", inputs=[DS, DS])
    with pytest.raises(ValidationError):
        ContainerSpec(image="img:1", inputs=[DS] * 33)
    assert ContainerSpec(image="img:1").network is None


CONFIG = OperatorConfig(cpu_image="reg/cpu:1", cuda_image="reg/cuda:1", serving_image="reg/serve:1")


def _nexajob(spec: ContainerSpec) -> dict[str, Any]:
    obj = nexajob_object(
        job_id="job_" + "b" * 26, tenant_id="t", namespace="ns", job_type=JobType.container, spec=spec
    )
    obj["metadata"]["uid"] = "uid-1"
    return obj


def test_cluster_mode_runs_unset_or_true_network_and_refuses_what_a_pod_cannot_honour() -> None:
    for ok in (ContainerSpec(image="img:1"), ContainerSpec(image="img:1", network=True)):
        assert builders.build_job(_nexajob(ok), 1, CONFIG)["spec"]["template"]["spec"]["containers"]
    with pytest.raises(ValueError, match="network=false"):
        builders.build_job(_nexajob(ContainerSpec(image="img:1", network=False)), 1, CONFIG)
    with pytest.raises(ValueError, match="inputs"):
        builders.build_job(_nexajob(ContainerSpec(image="img:1", inputs=[DS])), 1, CONFIG)


@pytest.mark.parametrize("image", ["-h", "--privileged", "img with space", "img;rm", ""])
def test_an_image_that_a_runtime_could_read_as_an_option_is_refused(image: str) -> None:
    from pydantic import ValidationError

    from nexa.contracts import ContainerSpec

    with pytest.raises(ValidationError):
        ContainerSpec(image=image)


def test_a_network_is_given_only_where_the_nodes_owner_allows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from nexa.contracts import ContainerSpec
    from nexa_engines.container.engine import check_network
    from nexa_engines.engine import EngineError

    monkeypatch.delenv("NEXA_CONTAINER_ALLOW_NETWORK", raising=False)
    check_network(ContainerSpec(image="img:1"))  # no network asked: fine
    with pytest.raises(EngineError) as refused:
        check_network(ContainerSpec(image="img:1", network=True))
    assert refused.value.code == "network_not_allowed" and not refused.value.retryable
    monkeypatch.setenv("NEXA_CONTAINER_ALLOW_NETWORK", "1")
    check_network(ContainerSpec(image="img:1", network=True))
