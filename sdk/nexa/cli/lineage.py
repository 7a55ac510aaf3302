"""``nexa lineage``: what an artifact was made from, or what was made from it, as a tree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from rich.markup import escape
from rich.tree import Tree

from nexa.cli.context import EXIT_USAGE, CliError, handle_errors, make_client
from nexa.cli.render import console, print_json
from nexa.contracts.lineage import DEFAULT_LINEAGE_DEPTH, MAX_LINEAGE_DEPTH, Lineage, LineageDirection

SEEN_NOTE = " [dim](shown above)[/]"


def node_label(graph: Lineage, node_id: str) -> str:
    """``ckpt_… checkpoint my-model (train job_…, pl_…/train)`` as markup; a deleted input says so."""
    node = graph.node(node_id)
    if node is None:
        return f"[bold]{escape(node_id)}[/]"
    if node.kind == "external":
        text = f"[bold]{escape(node.id)}[/] [dim]external input[/]"
    else:
        text = f"[bold]{escape(node.id)}[/] {escape(node.kind)}"
        # A job's outputs are named "<type> output of job_…" by default: the job is shown beside it anyway.
        if node.name and not (node.job_id and node.job_id in node.name):
            text += f" {escape(node.name)}"
    made_by = " ".join(part for part in (node.job_type, node.job_id) if part)
    if node.pipeline_id:
        step = f"/{node.pipeline_step}" if node.pipeline_step else ""
        made_by = f"{made_by}, {node.pipeline_id}{step}" if made_by else f"{node.pipeline_id}{step}"
    if made_by:
        text += f" [dim]({escape(made_by)})[/]"
    if node.missing:
        text += " [red]deleted[/]"
    return text


def _grow(branch: Tree, graph: Lineage, start: str, step: Callable[[str], list[str]]) -> None:
    """Add to ``branch`` what ``step`` leads to from ``start``, and on, depth first.

    A node reached again (a shared ancestor, or a cycle in a bad graph) is shown once with its own
    subtree, and after that as a reference: the tree stays as big as the graph.
    """
    expanded = {start}
    # Children are added to their parent in order when the parent is shown; the stack then visits
    # them in display order, so a node's first appearance from the top is the one expanded.
    pending: list[tuple[Tree, str]] = [(branch.add(""), child) for child in step(start)]
    pending.reverse()
    while pending:
        sub, node_id = pending.pop()
        if node_id in expanded:
            sub.label = node_label(graph, node_id) + SEEN_NOTE
            continue
        expanded.add(node_id)
        sub.label = node_label(graph, node_id)
        children = [(sub.add(""), child) for child in step(node_id)]
        pending.extend(reversed(children))


def lineage_tree(graph: Lineage) -> Tree:
    """The graph as a tree rooted at its root: up, the inputs under each node; down, what was made
    from it; both, the two under their own headings."""
    tree = Tree(node_label(graph, graph.root))
    if graph.direction in ("up", "both"):
        branch = tree if graph.direction == "up" else tree.add("[bold]made from[/]")
        _grow(branch, graph, graph.root, graph.inputs_of)
        if not graph.inputs_of(graph.root):
            branch.add("[dim]no recorded inputs[/]")
    if graph.direction in ("down", "both"):
        branch = tree if graph.direction == "down" else tree.add("[bold]used to make[/]")
        _grow(branch, graph, graph.root, graph.outputs_of)
        if not graph.outputs_of(graph.root):
            branch.add("[dim]nothing made from it yet[/]")
    return tree


def _direction(up: bool, down: bool, both: bool) -> LineageDirection:
    chosen = [name for name, on in (("up", up), ("down", down), ("both", both)) if on]
    if len(chosen) > 1:
        raise CliError(
            f"choose one of --up, --down and --both, not {' and '.join('--' + c for c in chosen)}", EXIT_USAGE
        )
    if chosen == ["down"]:
        return "down"
    if chosen == ["both"]:
        return "both"
    return "up"


@handle_errors
def lineage(
    artifact_id: Annotated[str, typer.Argument(help="Artifact id (ds_…, ckpt_…, ev_…, dp_…).")],
    up: Annotated[bool, typer.Option("--up", help="What it was made from (the default).")] = False,
    down: Annotated[bool, typer.Option("--down", help="What was made from it.")] = False,
    both: Annotated[bool, typer.Option("--both", help="Both, under two headings.")] = False,
    depth: Annotated[
        int, typer.Option("--depth", min=1, max=MAX_LINEAGE_DEPTH, help="Follow at most this many steps.")
    ] = DEFAULT_LINEAGE_DEPTH,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the graph as JSON (nodes and edges).")
    ] = False,
) -> None:
    """An artifact's lineage as a tree: each node with the job (and pipeline step) that made it."""
    direction = _direction(up, down, both)
    with make_client() as client:
        graph = client.lineage(artifact_id, direction=direction, depth=depth)
    if as_json:
        print_json(graph.model_dump(mode="json"))
        return
    console.print(lineage_tree(graph))
    if graph.truncated:
        more = (
            f" (--depth {min(graph.depth * 2, MAX_LINEAGE_DEPTH)})" if graph.depth < MAX_LINEAGE_DEPTH else ""
        )
        console.print(f"[dim]more lies beyond {graph.depth} steps: ask for a larger depth{more}[/]")
