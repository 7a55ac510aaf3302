"""Row scores, the dataset quality tier, and the audit report (JSON, Markdown, HTML)."""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np

from nexa_engines.audit.heuristics import FLAG_BITS, FLAG_NAMES

# Points taken off a perfect 5 per flag (docs/audit.md explains the choices).
PENALTIES: dict[str, float] = {
    "empty": 5.0,
    "non_text": 3.5,
    "repetitive": 2.5,
    "too_short": 2.0,
    "exact_duplicate": 2.0,
    "pii": 1.5,
    "too_long": 1.0,
    "near_duplicate": 1.0,
    "low_alpha_words": 1.5,
    "symbol_ratio": 1.0,
    "word_length": 1.0,
    "no_stop_words": 1.0,
    "bullet_lines": 0.5,
    "ellipsis_lines": 0.5,
}
JUDGE_WEIGHT = 0.5  # share of a judged row's score that comes from the judge

# The SPEC's graded tiers (A+ … D): (tier, minimum mean score, most rows flagged), best first.
# The letter bands are A: mean >= 4.5 with <= 5% flagged, B: 4.0 / 15%, C: 3.0 / 35%;
# + and - split each band.
TIER_RULES: tuple[tuple[str, float, float], ...] = (
    ("A+", 4.8, 0.01),
    ("A", 4.6, 0.03),
    ("A-", 4.5, 0.05),
    ("B+", 4.35, 0.08),
    ("B", 4.2, 0.12),
    ("B-", 4.0, 0.15),
    ("C+", 3.7, 0.22),
    ("C", 3.35, 0.28),
    ("C-", 3.0, 0.35),
)
FALLBACK_TIER = "D"
HISTOGRAM_BINS = 10


def heuristic_scores(flags: np.ndarray) -> np.ndarray:
    """5 minus the penalties of each row's flags, clipped to [0, 5]."""
    penalty = np.zeros(len(flags), dtype=np.float64)
    for name, points in PENALTIES.items():
        penalty += ((flags & FLAG_BITS[name]) != 0) * points
    return np.clip(5.0 - penalty, 0.0, 5.0)


def blend_judge(heuristic: np.ndarray, judge: np.ndarray) -> np.ndarray:
    """Mix a 1-5 judge score (NaN where unjudged) into the 0-5 heuristic score."""
    judged = ~np.isnan(judge)
    scaled = (np.where(judged, judge, 1.0) - 1.0) * 1.25  # 1..5 -> 0..5
    blended = (1.0 - JUDGE_WEIGHT) * heuristic + JUDGE_WEIGHT * scaled
    return np.where(judged, np.clip(blended, 0.0, 5.0), heuristic)


def quality_tier(mean_score: float, flagged_fraction: float) -> str:
    """A+, A, A-, B+ … C-, or D from the mean row score and the share of flagged rows."""
    for tier, min_mean, max_flagged in TIER_RULES:
        if mean_score >= min_mean and flagged_fraction <= max_flagged:
            return tier
    return FALLBACK_TIER


def flag_counts(flags: np.ndarray) -> dict[str, int]:
    """Rows carrying each flag."""
    return {name: int(np.count_nonzero(flags & FLAG_BITS[name])) for name in FLAG_NAMES}


def histogram(scores: np.ndarray) -> list[dict[str, float | int]]:
    """Row counts in equal-width score bins over [0, 5]."""
    counts, edges = np.histogram(scores, bins=HISTOGRAM_BINS, range=(0.0, 5.0))
    return [
        {"low": round(float(edges[i]), 2), "high": round(float(edges[i + 1]), 2), "count": int(c)}
        for i, c in enumerate(counts)
    ]


def tier_rules_text() -> str:
    """The tier rules in words."""
    parts = [f"{t}: mean score >= {m} and at most {f:.0%} of rows flagged" for t, m, f in TIER_RULES]
    return "; ".join(parts) + f"; otherwise {FALLBACK_TIER}"


def render_markdown(summary: dict[str, Any]) -> str:
    """The report as Markdown."""
    lines = [
        "# Dataset audit",
        "",
        f"Dataset: `{summary['dataset_uri']}`  ",
        f"Text columns: {', '.join(summary['text_columns'])}",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    for label, value in _summary_rows(summary):
        lines.append(f"| {label} | {value} |")
    lines += ["", "## Flags", "", "| flag | rows | share |", "|---|---|---|"]
    n = max(1, summary["num_rows"])
    for name, count in summary["flag_counts"].items():
        lines.append(f"| {name} | {count} | {count / n:.1%} |")
    if summary["pii_kinds"]:
        lines += ["", "PII kinds: " + ", ".join(f"{k} {v}" for k, v in summary["pii_kinds"].items())]
    lines += ["", "## Score histogram", "", "```"]
    peak = max([b["count"] for b in summary["score_histogram"]] + [1])
    for b in summary["score_histogram"]:
        bar = "#" * round(40 * b["count"] / peak)
        lines.append(f"{b['low']:>4.1f}-{b['high']:<4.1f} {bar} {b['count']}")
    lines += ["```", "", "## Examples", ""]
    for name, examples in summary["examples"].items():
        for ex in examples:
            lines.append(f"- `{name}` row {ex['row']}: {ex['detail']}")
    lines += ["", f"Tier rules: {summary['tier_rules']}.", ""]
    return "\n".join(lines)


def _summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("rows", str(summary["num_rows"])),
        ("quality tier", summary["quality_tier"]),
        ("mean score (0-5)", f"{summary['mean_score']:.3f}"),
        ("rows with any flag", f"{summary['flagged_rows']} ({summary['flagged_fraction']:.1%})"),
        ("exact duplicates", str(summary["exact_duplicates"])),
        ("near duplicates", str(summary["near_duplicates"])),
        ("near-duplicate clusters", str(summary["near_duplicate_clusters"])),
    ]
    judge = summary.get("judge")
    if judge:
        rows.append(
            ("judge mean (1-5)", "n/a" if judge["mean_score"] is None else f"{judge['mean_score']:.2f}")
        )
        rows.append(("judged rows", f"{judge['scored']} of {judge['sampled']} sampled"))
    return rows


def _svg_histogram(bins: list[dict[str, Any]]) -> str:
    width, height, pad = 520, 200, 24
    bar_w = (width - 2 * pad) / max(1, len(bins))
    peak = max([b["count"] for b in bins] + [1])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" role="img">']
    for i, b in enumerate(bins):
        h = (height - pad) * b["count"] / peak
        x = pad + i * bar_w
        y = height - h
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 4:.1f}" height="{h:.1f}" fill="#3b7dd8">'
            f"<title>{b['low']}-{b['high']}: {b['count']}</title></rect>"
        )
        parts.append(
            f'<text x="{x + bar_w / 2 - 2:.1f}" y="{y - 4:.1f}" font-size="10" text-anchor="middle">{b["count"]}</text>'
        )
        parts.append(f'<text x="{x:.1f}" y="{height + 14}" font-size="10">{b["low"]:g}</text>')
    parts.append(f'<text x="{width - pad:.1f}" y="{height + 14}" font-size="10">5</text>')
    parts.append(
        f'<text x="{width / 2:.0f}" y="{height + 32}" font-size="11" text-anchor="middle">nexa_score</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def render_html(summary: dict[str, Any]) -> str:
    """The report as a standalone HTML page (inline SVG histogram, no scripts)."""
    esc = html.escape
    n = max(1, summary["num_rows"])
    summary_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _summary_rows(summary))
    flag_rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{count}</td><td>{count / n:.1%}</td></tr>"
        for name, count in summary["flag_counts"].items()
    )
    examples = "".join(
        f"<li><code>{esc(name)}</code> row {ex['row']}: {esc(ex['detail'])}</li>"
        for name, items in summary["examples"].items()
        for ex in items
    )
    pii = ", ".join(f"{esc(k)} {v}" for k, v in summary["pii_kinds"].items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Dataset audit</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:860px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
        ".tier{font-size:2em;font-weight:bold}</style></head><body>"
        f"<h1>Dataset audit</h1><p>Dataset: <code>{esc(summary['dataset_uri'])}</code><br>"
        f"Text columns: {esc(', '.join(summary['text_columns']))}</p>"
        f"<p class='tier'>Quality tier {esc(summary['quality_tier'])}</p>"
        f"<table>{summary_rows}</table>"
        f"<h2>Flags</h2><table><tr><th>flag</th><th>rows</th><th>share</th></tr>{flag_rows}</table>"
        + (f"<p>PII kinds: {pii}</p>" if pii else "")
        + f"<h2>Score histogram</h2>{_svg_histogram(summary['score_histogram'])}"
        f"<h2>Examples</h2><ul>{examples}</ul>"
        f"<p>Tier rules: {esc(summary['tier_rules'])}.</p></body></html>\n"
    )


def render_json(summary: dict[str, Any]) -> str:
    """The report as indented JSON."""
    return json.dumps(summary, indent=2, sort_keys=False) + "\n"
