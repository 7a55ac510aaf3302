"""The loss curve is a real chart: a PNG of the promised size whose axes, labels and line are drawn."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexa_engines.train.plot import loss_curve_png

matplotlib = pytest.importorskip("matplotlib")


def test_the_loss_curve_has_axes_labels_a_title_and_the_line(tmp_path: Path) -> None:
    from matplotlib.image import imread

    path = tmp_path / "loss.png"
    loss_curve_png(path, [1, 2, 3, 4, 5], [2.0, 1.5, 1.1, 0.9, 0.8])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)
    assert pixels.shape[:2] == (360, 640)
    rgb = pixels[..., :3]
    blue = ((abs(rgb[..., 0] - 0x1F / 255) < 0.05) & (abs(rgb[..., 2] - 0xB4 / 255) < 0.05)).sum()
    dark = (rgb.sum(axis=-1) < 0.6).sum()  # text (title, labels, tick numbers) and the axes
    assert blue > 200, "the loss line is drawn"
    assert dark > 2000, "axes, ticks and labels are drawn"


def test_an_empty_history_still_writes_a_readable_image(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    loss_curve_png(path, [], [])
    assert path.stat().st_size > 1000
