"""The evaluation report as JSON, Markdown and HTML."""

from __future__ import annotations

import html
import json
from typing import Any

from nexa.contracts.results import lower_is_better


def render_json(report: dict[str, Any]) -> str:
    """Pretty JSON."""
    return json.dumps(report, indent=2, sort_keys=True)


DELTA_HEADER = "change vs base"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def delta_cell(name: str, value: Any, base: Any) -> str:
    """``+0.1200 (better)``: the change against the base, and whether it is an improvement for this metric."""
    if not isinstance(base, float | int) or not isinstance(value, float | int):
        return ""
    change = value - base
    if change == 0:
        return f"{change:+.4f} (same)"
    improved = change < 0 if lower_is_better(name) else change > 0
    return f"{change:+.4f} ({'better' if improved else 'worse'})"


def _rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    scores, base = report["scores"], report.get("base_scores") or {}
    rows = []
    for name in sorted(scores):
        b = base.get(name)
        label = f"{name} ({'lower' if lower_is_better(name) else 'higher'} is better)"
        rows.append(
            (label, _fmt(scores[name]), _fmt(b) if b is not None else "-", delta_cell(name, scores[name], b))
        )
    return rows


def shown(text: Any) -> str:
    """A model's output as a reader should see it: bytes that did not decode are said to be so."""
    value = str(text)
    if "\ufffd" in value:
        return "[undecodable bytes] " + value.replace("\ufffd", "?")
    return value


def verdict(example: dict[str, Any], key: str) -> str:
    """``✓`` when the prediction matches the reference (exact match), ``✗`` when not, nothing without one."""
    from nexa_engines.models.prompt import normalize_answer

    if not example.get("reference") or key not in example:
        return ""
    return (
        "✓ " if normalize_answer(str(example[key])) == normalize_answer(str(example["reference"])) else "✗ "
    )


def _example_cells(example: dict[str, Any]) -> list[str]:
    cells = [shown(example.get("instruction", "")), shown(example.get("reference", ""))]
    for key in ("prediction", "base_prediction"):
        cells.append(verdict(example, key) + shown(example.get(key, "")) if key in example else "")
    return cells


def render_markdown(report: dict[str, Any]) -> str:
    """A readable Markdown report: scores against the base, then examples."""
    lines = [
        f"# Evaluation of {report['checkpoint_id']}",
        "",
        f"Data: {report['dataset']} ({report['num_samples']} samples). Base: {report.get('base_model') or '-'}.",
        "",
        f"| metric | checkpoint | base | {DELTA_HEADER} |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _rows(report)]
    if report.get("benchmark"):
        lines += ["", _scored_by(report["benchmark"])]
    if not report.get("examples"):
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "## Examples",
        "",
        "✓ matches the reference, ✗ does not (exact match after normalization).",
        "",
        "| instruction | reference | checkpoint | base |",
        "|---|---|---|---|",
    ]
    for ex in report.get("examples", []):
        cells = [c.replace("|", "\\|").replace("\n", " ")[:120] for c in _example_cells(ex)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _scored_by(benchmark: dict[str, Any]) -> str:
    return (
        f"Scored by {benchmark['engine']} {benchmark['version']} (tasks: {', '.join(benchmark['tasks'])}); "
        "its full results, standard errors included, are in report.json."
    )


def render_html(report: dict[str, Any]) -> str:
    """The same report as a standalone HTML page."""
    esc = html.escape
    score_rows = "".join(
        f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td>{esc(c)}</td><td>{esc(d)}</td></tr>"
        for a, b, c, d in _rows(report)
    )
    examples = "".join(
        "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in _example_cells(ex)) + "</tr>"
        for ex in report.get("examples", [])
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Nexa evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style>"
        f"</head><body><h1>Evaluation of {esc(report['checkpoint_id'])}</h1>"
        f"<p>Data: {esc(str(report['dataset']))} ({report['num_samples']} samples). Base: {esc(str(report.get('base_model') or '-'))}.</p>"
        f"<table><tr><th>metric</th><th>checkpoint</th><th>base</th><th>{DELTA_HEADER}</th></tr>{score_rows}</table>"
        + (f"<p>{esc(_scored_by(report['benchmark']))}</p>" if report.get("benchmark") else "")
        + (
            "<h2>Examples</h2><table><tr><th>instruction</th><th>reference</th><th>checkpoint</th><th>base</th></tr>"
            f"{examples}</table>"
            if examples
            else ""
        )
        + "</body></html>"
    )
