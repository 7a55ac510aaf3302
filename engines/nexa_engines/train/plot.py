"""A loss-curve PNG written with zlib only (no plotting library on workers)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

_BG = (255, 255, 255)
_AXIS = (60, 60, 60)
_GRID = (225, 225, 225)
_LINE = (31, 119, 180)


def _png(width: int, height: int, pixels: bytearray) -> bytes:
    raw = b"".join(b"\x00" + bytes(pixels[y * width * 3 : (y + 1) * width * 3]) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def loss_curve_png(
    path: Path, steps: Sequence[float], losses: Sequence[float], width: int = 640, height: int = 360
) -> Path:
    """Draw loss against step (axes, grid, a polyline) and write it to ``path`` as PNG."""
    pixels = bytearray(_BG * (width * height))
    left, right, top, bottom = 50, width - 15, 15, height - 35

    def put(x: int, y: int, color: tuple[int, int, int]) -> None:
        if 0 <= x < width and 0 <= y < height:
            at = (y * width + x) * 3
            pixels[at : at + 3] = bytes(color)

    for i in range(5):
        y = top + (bottom - top) * i // 4
        for x in range(left, right):
            put(x, y, _GRID)
    for x in range(left, right + 1):
        put(x, bottom, _AXIS)
    for y in range(top, bottom + 1):
        put(left, y, _AXIS)
    points = [(s, v) for s, v in zip(steps, losses, strict=False) if v == v]  # drop NaN
    if points:
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

        def to_px(s: float, v: float) -> tuple[int, int]:
            return (
                round(left + (s - x0) / (x1 - x0) * (right - left)),
                round(bottom - (v - y0) / (y1 - y0) * (bottom - top)),
            )

        prev = to_px(*points[0])
        for point in points[1:]:
            cur = to_px(*point)
            n = max(abs(cur[0] - prev[0]), abs(cur[1] - prev[1]), 1)
            for k in range(n + 1):
                x = prev[0] + (cur[0] - prev[0]) * k // n
                y = prev[1] + (cur[1] - prev[1]) * k // n
                for dy in (0, 1):
                    put(x, y + dy, _LINE)
            prev = cur
        if len(points) == 1:
            put(*prev, _LINE)
    path.write_bytes(_png(width, height, pixels))
    return path
