"""An artifact's lineage: what it was made from (up, from the manifests) and what was made from it
(down, from the ``artifact_inputs`` index), for one tenant.

Up-edges come from each artifact's own manifest, so inputs that are no artifact (a base model's
path or hub name, an ``s3://`` dataset, a teacher endpoint) appear too, as ``external`` nodes.
Down-edges come from the index written when an artifact is registered. Only the tenant's own
artifacts are described; an input the tenant does not own (or that was deleted) is a bare node
marked ``missing``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexa.contracts.lineage import Lineage, LineageDirection, LineageEdge, LineageNode
from nexa_gateway.db import Artifact, ArtifactInput, Job, PipelineStepRow
from nexa_gateway.services.artifacts import get_artifact_row, input_ids
from nexa_store.base import ArtifactStore

MAX_NODES = 500


def _external_inputs(store: ArtifactStore, artifact_id: str) -> tuple[list[str], list[str]]:
    """(artifact ids, other input URIs) the artifact's manifest names as its inputs."""
    try:
        manifest = store.read_manifest(artifact_id, verify=False)
    except Exception:  # a manifest gone or unreadable: the node stays, without inputs
        return [], []
    artifacts = sorted(input_ids(manifest))
    others = []
    for source in manifest.inputs:
        named = source.artifact_id or ""
        if named in artifacts or any(a in source.uri for a in artifacts):
            continue
        others.append(source.uri)
    return artifacts, list(dict.fromkeys(others))


def _owned(session: Session, tenant_id: str, artifact_id: str) -> bool:
    found = session.scalar(
        select(Artifact.id).where(Artifact.id == artifact_id, Artifact.tenant_id == tenant_id)
    )
    return found is not None


def _made_from(session: Session, tenant_id: str, ids: Iterable[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for row in session.execute(
        select(ArtifactInput.input_id, ArtifactInput.artifact_id).where(
            ArtifactInput.tenant_id == tenant_id, ArtifactInput.input_id.in_(list(ids))
        )
    ):
        found.setdefault(row.input_id, []).append(row.artifact_id)
    return found


def _describe(session: Session, tenant_id: str, ids: set[str]) -> dict[str, LineageNode]:
    rows = {
        a.id: a
        for a in session.scalars(
            select(Artifact).where(Artifact.tenant_id == tenant_id, Artifact.id.in_(ids))
        )
    }
    job_ids = {a.job_id for a in rows.values() if a.job_id}
    types = dict(session.execute(select(Job.id, Job.job_type).where(Job.id.in_(job_ids))).tuples().all())
    steps = {
        r.job_id: (r.pipeline_id, r.name)
        for r in session.scalars(select(PipelineStepRow).where(PipelineStepRow.job_id.in_(job_ids)))
    }
    nodes = {}
    for artifact_id, row in rows.items():
        pipeline_id, step = steps.get(row.job_id or "", (None, None))
        nodes[artifact_id] = LineageNode(
            id=artifact_id,
            kind=row.kind,
            name=row.name or "",
            job_id=row.job_id,
            job_type=types.get(row.job_id or ""),
            pipeline_id=pipeline_id,
            pipeline_step=step,
            created_at=row.created_at,
            sha256=row.sha256,
        )
    return nodes


def lineage(
    session: Session,
    store: ArtifactStore,
    tenant_id: str,
    artifact_id: str,
    direction: LineageDirection,
    depth: int,
) -> Lineage:
    """The graph within ``depth`` steps of ``artifact_id`` (404 when the tenant has no such artifact)."""
    root = get_artifact_row(session, tenant_id, artifact_id)
    owned: set[str] = {root.id}
    external: set[str] = set()
    edges: dict[tuple[str, str], None] = {}
    truncated = False
    queue: deque[tuple[str, int, str]] = deque()
    if direction in ("up", "both"):
        queue.append((root.id, 0, "up"))
    if direction in ("down", "both"):
        queue.append((root.id, 0, "down"))
    seen: set[tuple[str, str]] = set()
    while queue:
        node, level, way = queue.popleft()
        if (node, way) in seen:
            continue
        seen.add((node, way))
        if way == "up":
            if node != root.id and not _owned(session, tenant_id, node):
                continue  # another tenant's (or a deleted) artifact: a bare node, never read past
            artifacts, others = _external_inputs(store, node)
            nexts = artifacts
            for uri in others:
                external.add(uri)
                edges[(uri, node)] = None
            for input_id in artifacts:
                edges[(input_id, node)] = None
        else:
            nexts = _made_from(session, tenant_id, [node]).get(node, [])
            for made in nexts:
                edges[(node, made)] = None
        if nexts and level + 1 > depth:
            truncated = True
            for other in nexts:  # edges past the depth are dropped with their nodes
                edges.pop((other, node) if way == "up" else (node, other), None)
            continue
        for other in nexts:
            owned.add(other)
            if len(owned) + len(external) >= MAX_NODES:
                truncated = True
                queue.clear()
                break
            queue.append((other, level + 1, way))
    described = _describe(session, tenant_id, owned)
    nodes = [described.get(i) or LineageNode(id=i, kind="artifact", missing=True) for i in sorted(owned)]
    nodes += [LineageNode(id=uri, kind="external") for uri in sorted(external)]
    known = {n.id for n in nodes}
    return Lineage(
        root=root.id,
        direction=direction,
        depth=depth,
        nodes=nodes,
        edges=[LineageEdge(source=s, target=t) for s, t in edges if s in known and t in known],
        truncated=truncated,
    )
