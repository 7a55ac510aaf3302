"""Lineage: which artifacts an artifact was made from, and which were made from it.

``GET /v1/artifacts/{id}/lineage?direction=up|down|both&depth=N`` answers with a ``Lineage``:
the artifacts reached within ``depth`` steps of the root as ``nodes``, and one ``edge`` per
"made from" (``source`` is the input, ``target`` what a job made from it). An input that is no
artifact (an ``s3://`` or ``hf://`` URI, a path) is a node of kind ``external`` whose id is that
URI; an input deleted since is a node with ``missing`` set.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LineageDirection = Literal["up", "down", "both"]

DEFAULT_LINEAGE_DEPTH = 10
MAX_LINEAGE_DEPTH = 50

# A node's id is an artifact id or, for an input that is no artifact, the URI the job read.
_NODE_ID_MAX = 4096


class LineageNode(BaseModel):
    """One artifact (or external input) of a lineage graph."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(
        max_length=_NODE_ID_MAX,
        description="An artifact id (`ds_…`, `ckpt_…`, `ev_…`, `dp_…`), or the URI of an input that is no artifact.",
    )
    kind: str = Field(
        max_length=32, description="dataset, checkpoint, eval, deployment, … or `external` for a URI."
    )
    name: str = Field("", max_length=500, description="The artifact's name, when it has one.")
    job_id: str | None = Field(None, max_length=64, description="The job that made it.")
    job_type: str | None = Field(None, max_length=32, description="That job's type.")
    pipeline_id: str | None = Field(None, max_length=64, description="The pipeline that job ran in.")
    pipeline_step: str | None = Field(None, max_length=64, description="The pipeline step that job ran.")
    created_at: datetime | None = None
    sha256: str | None = Field(None, max_length=128, description="Content digest, when known.")
    missing: bool = Field(False, description="An input deleted since the artifact was made from it.")


class LineageEdge(BaseModel):
    """``target`` was made from ``source``."""

    model_config = ConfigDict(extra="ignore")

    source: str = Field(max_length=_NODE_ID_MAX, description="The input's node id.")
    target: str = Field(max_length=_NODE_ID_MAX, description="The node made from it.")


class Lineage(BaseModel):
    """An artifact's lineage graph (``GET /v1/artifacts/{id}/lineage``)."""

    model_config = ConfigDict(extra="ignore")

    root: str = Field(max_length=_NODE_ID_MAX, description="The artifact asked about.")
    direction: LineageDirection = Field(
        description="up: what it was made from; down: what was made from it; both."
    )
    depth: int = Field(description="How many steps from the root were followed.")
    nodes: list[LineageNode] = Field(default_factory=list)
    edges: list[LineageEdge] = Field(default_factory=list)
    truncated: bool = Field(False, description="More lies beyond `depth` steps (ask with a larger depth).")

    def node(self, node_id: str) -> LineageNode | None:
        """The node with ``node_id``, if the graph has it."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        return None

    def inputs_of(self, node_id: str) -> list[str]:
        """The ids ``node_id`` was made from, in the order of the edges, each once."""
        return list(dict.fromkeys(e.source for e in self.edges if e.target == node_id))

    def outputs_of(self, node_id: str) -> list[str]:
        """The ids made from ``node_id``, in the order of the edges, each once."""
        return list(dict.fromkeys(e.target for e in self.edges if e.source == node_id))
