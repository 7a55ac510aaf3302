"""Which node a pending job fits, and the reason none does: the claim query's rules, table-tested."""

from __future__ import annotations

from typing import Any

import pytest

from nexa_gateway.services.schedulability import Need, Node, fits, reason


def node(owner: str | None = None, types: tuple[str, ...] = ("audit", "train"), **hw: Any) -> Node:
    return Node({"cpu_count": 4, "memory_gb": 16.0, "tier": "cpu", **hw}, frozenset(types), owner)


def need(**fields: Any) -> Need:
    base: dict[str, Any] = {
        "job_type": "train",
        "tenant_id": "tnt_a",
        "gpus": 0,
        "gpu_type": None,
        "tier": None,
        "cpu": 1.0,
        "memory_gb": 2.0,
    }
    return Need(**{**base, **fields})


@pytest.mark.parametrize(
    ("job", "nodes", "why"),
    [
        (need(), [node()], None),
        (need(), [], "no worker is connected"),
        (
            need(memory_gb=4000),
            [node(), node(memory_gb=64)],
            "no connected worker has 4000 GiB of memory (the most any offers: 64 GiB)",
        ),
        (need(cpu=32), [node()], "no connected worker has 32 CPUs (the most any offers: 4)"),
        (
            need(disk_gb=500),
            [node(disk_gb=100.5)],
            "no connected worker has 500 GiB of free disk (the most any offers: 100.5 GiB)",
        ),
        (
            need(gpus=2),
            [node(gpus=1, gpu_type="T4")],
            "no connected worker has 2 GPU(s) (the most any offers: 1)",
        ),
        (need(gpus=1, gpu_type="H100"), [node(gpus=8, gpu_type="A100")], "no connected worker has H100 GPUs"),
        (need(tier="hpc"), [node(tier="consumer-gpu")], "no connected worker is of tier hpc"),
        (need(job_type="deploy"), [node()], "no connected worker runs deploy jobs"),
        (need(), [node(owner="tnt_b")], "no connected worker is the platform's or this tenant's"),
        (need(), [node(owner="tnt_a")], None),
        # A node that did not say how much memory it has is not matched on memory.
        (need(memory_gb=4000), [Node({"cpu_count": 4}, frozenset({"train"}), None)], None),
        # Each requirement is met by some node, but no node meets both.
        (
            need(memory_gb=32, cpu=8),
            [node(memory_gb=64, cpu_count=2), node(memory_gb=8, cpu_count=16)],
            "no connected worker meets all of its requirements at once",
        ),
        (
            need(gpus=1, gpu_memory_gb=80),
            [node(gpus=1, gpu_type="A100", gpu_memory_gb=40)],
            "no connected worker has 80 GiB on each GPU (the most any offers: 40 GiB)",
        ),
    ],
)
def test_a_job_fits_a_node_or_says_why_none(job: Need, nodes: list[Node], why: str | None) -> None:
    assert reason(job, nodes) == why
    assert any(fits(job, n) for n in nodes) == (why is None)
