"""The evaluation report as JSON, Markdown and HTML."""

from __future__ import annotations

import html
import json
from typing import Any


def render_json(report: dict[str, Any]) -> str:
    """Pretty JSON."""
    return json.dumps(report, indent=2, sort_keys=True)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    scores, base = report["scores"], report.get("base_scores") or {}
    rows = []
    for name in sorted(scores):
        b = base.get(name)
        delta = (
            f"{scores[name] - b:+.4f}"
            if isinstance(b, float | int) and isinstance(scores[name], float | int)
            else ""
        )
        rows.append((name, _fmt(scores[name]), _fmt(b) if b is not None else "-", delta))
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    """A readable Markdown report: scores against the base, then examples."""
    lines = [
        f"# Evaluation of {report['checkpoint_id']}",
        "",
        f"Data: {report['dataset']} ({report['num_samples']} samples). Base: {report.get('base_model') or '-'}.",
        "",
        "| metric | checkpoint | base | delta |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _rows(report)]
    lines += ["", "## Examples", "", "| instruction | reference | checkpoint | base |", "|---|---|---|---|"]
    for ex in report.get("examples", []):
        cells = [
            str(ex.get(k, "")).replace("|", "\\|").replace("\n", " ")[:120]
            for k in ("instruction", "reference", "prediction", "base_prediction")
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_html(report: dict[str, Any]) -> str:
    """The same report as a standalone HTML page."""
    esc = html.escape
    score_rows = "".join(
        f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td>{esc(c)}</td><td>{esc(d)}</td></tr>"
        for a, b, c, d in _rows(report)
    )
    examples = "".join(
        "<tr>"
        + "".join(
            f"<td>{esc(str(ex.get(k, '')))}</td>"
            for k in ("instruction", "reference", "prediction", "base_prediction")
        )
        + "</tr>"
        for ex in report.get("examples", [])
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Nexa evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style>"
        f"</head><body><h1>Evaluation of {esc(report['checkpoint_id'])}</h1>"
        f"<p>Data: {esc(str(report['dataset']))} ({report['num_samples']} samples). Base: {esc(str(report.get('base_model') or '-'))}.</p>"
        f"<table><tr><th>metric</th><th>checkpoint</th><th>base</th><th>delta</th></tr>{score_rows}</table>"
        f"<h2>Examples</h2><table><tr><th>instruction</th><th>reference</th><th>checkpoint</th><th>base</th></tr>{examples}</table>"
        "</body></html>"
    )
