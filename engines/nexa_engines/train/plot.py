"""The loss curve as a PNG a person can read: axes, ticks, labels, a title (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def loss_curve_png(
    path: Path, steps: Sequence[int], losses: Sequence[float], *, title: str = "Training loss"
) -> None:
    """Write the training loss against the optimizer step to ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a worker or in a pod
    from matplotlib.figure import Figure

    # A Figure of its own, not pyplot's global state: workers run attempts in threads.
    figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    if steps:
        axes.plot(
            list(steps), list(losses), color="#1f77b4", linewidth=1.5, marker="o" if len(steps) < 30 else None
        )
        axes.set_xlim(left=min(steps), right=max(max(steps), min(steps) + 1))
    else:
        axes.text(0.5, 0.5, "no steps recorded", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(title)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (cross-entropy)")
    axes.grid(True, color="#e1e1e1", linewidth=0.8)
    figure.savefig(path, format="png")
