"""The evaluation report reads right: which way is better, which answers were wrong, what did not decode."""

from __future__ import annotations

from nexa_engines.evaluate.report import delta_cell, render_html, render_markdown

REPORT = {
    "checkpoint_id": "ckpt_" + "a" * 26,
    "dataset": "ds_" + "b" * 26,
    "num_samples": 2,
    "base_model": "ckpt_" + "c" * 26,
    "scores": {"exact_match": 0.5, "perplexity": 3.2},
    "base_scores": {"exact_match": 0.25, "perplexity": 4.0},
    "examples": [
        {
            "instruction": "Opposite of hot?",
            "reference": "Cold.",
            "prediction": "cold",
            "base_prediction": "warm",
        },
        {"instruction": "2+3?", "reference": "5", "prediction": "\ufffd\ufffd5x", "base_prediction": "5"},
    ],
}


def test_each_change_says_whether_it_is_better_for_its_metric() -> None:
    assert delta_cell("exact_match", 0.5, 0.25) == "+0.2500 (better)"
    assert delta_cell("perplexity", 3.2, 4.0) == "-0.8000 (better)"  # lower perplexity is the better model
    assert delta_cell("perplexity", 5.0, 4.0) == "+1.0000 (worse)"
    assert delta_cell("accuracy", 0.5, 0.5) == "+0.0000 (same)"
    assert delta_cell("judge", 0.5, None) == ""


def test_markdown_and_html_mark_wrong_answers_and_undecodable_text() -> None:
    markdown = render_markdown(REPORT)
    assert "| perplexity (lower is better) | 3.2000 | 4.0000 | -0.8000 (better) |" in markdown
    assert "| exact_match (higher is better) | 0.5000 | 0.2500 | +0.2500 (better) |" in markdown
    assert "| Opposite of hot? | Cold. | ✓ cold | ✗ warm |" in markdown
    assert "| 2+3? | 5 | ✗ [undecodable bytes] ??5x | ✓ 5 |" in markdown
    html = render_html(REPORT)
    assert "✗ [undecodable bytes] ??5x" in html and "change vs base" in html and "\ufffd" not in html
