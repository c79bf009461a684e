"""A small line chart drawn with OpenCV (no matplotlib): stacked panels with axes, ticks, labels and a legend."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: BGR colours of the series, in order (colour-blind friendly: blue, orange, green, vermilion).
PALETTE = ((178, 114, 0), (0, 159, 230), (115, 158, 0), (0, 94, 213), (167, 121, 204))
FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
INK, GRID, WHITE = (40, 40, 40), (225, 225, 225), (255, 255, 255)


@dataclass
class Series:
    label: str
    values: Sequence[float]  # NaN breaks the line; +-inf is drawn at the panel's edge with a marker


@dataclass
class Panel:
    title: str
    ylabel: str
    series: list[Series] = field(default_factory=list)


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0 if math.isfinite(lo) else 1.0
        lo = lo if math.isfinite(lo) else 0.0
    raw = (hi - lo) / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 0.5:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _fmt(v: float, step: float) -> str:
    """A tick label with as many decimals as the tick step needs."""
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"{v:.{decimals}f}"


def _text(img: np.ndarray, s: str, org: tuple[int, int], scale: float = 0.45, color=INK, thick: int = 1) -> None:
    import cv2

    cv2.putText(img, s, org, FONT, scale, color, thick, cv2.LINE_AA)


def _text_size(s: str, scale: float = 0.45, thick: int = 1) -> tuple[int, int]:
    import cv2

    (w, h), _ = cv2.getTextSize(s, FONT, scale, thick)
    return w, h


def _draw_panel(img: np.ndarray, panel: Panel, box: tuple[int, int, int, int], n: int) -> None:
    import cv2

    x0, y0, x1, y1 = box
    finite = [v for s in panel.series for v in s.values if v is not None and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi) * 0.05, 0.5)
    yt = nice_ticks(lo - pad, hi + pad)
    ylo, yhi = yt[0], yt[-1]
    xt = nice_ticks(0, max(n - 1, 1), 8)
    xt = [t for t in xt if t <= max(n - 1, 1)]

    def px(i: float) -> int:
        return int(round(x0 + (x1 - x0) * i / max(n - 1, 1)))

    def py(v: float) -> int:
        return int(round(y1 - (y1 - y0) * (v - ylo) / (yhi - ylo)))

    ystep = yt[1] - yt[0] if len(yt) > 1 else 1.0
    for t in yt:
        cv2.line(img, (x0, py(t)), (x1, py(t)), GRID, 1)
        w, h = _text_size(_fmt(t, ystep))
        _text(img, _fmt(t, ystep), (x0 - w - 6, py(t) + h // 2))
    for t in xt:
        cv2.line(img, (px(t), y1), (px(t), y1 + 4), INK, 1)
        w, h = _text_size(_fmt(t, 1.0))
        _text(img, _fmt(t, 1.0), (px(t) - w // 2, y1 + h + 8))
    cv2.rectangle(img, (x0, y0), (x1, y1), INK, 1)
    _text(img, panel.title, (x0, y0 - 10), 0.55, INK, 1)
    w, _ = _text_size("frame")
    _text(img, "frame", ((x0 + x1 - w) // 2, y1 + 38))
    label = np.full((24, (y1 - y0)), 255, np.uint8)
    lw, lh = _text_size(panel.ylabel)
    cv2.putText(label, panel.ylabel, (max(((y1 - y0) - lw) // 2, 0), 17), FONT, 0.45, 0, 1, cv2.LINE_AA)
    rot = cv2.rotate(label, cv2.ROTATE_90_COUNTERCLOCKWISE)
    lx = x0 - 70
    region = img[y0:y1, lx : lx + 24]
    region[rot < 250] = np.repeat(rot[..., None], 3, axis=2)[rot < 250]

    for k, s in enumerate(panel.series):
        color = PALETTE[k % len(PALETTE)]
        prev = None
        for i, v in enumerate(s.values):
            if v is None or math.isnan(v):
                prev = None
                continue
            if math.isinf(v):
                pt = (px(i), py(yhi) if v > 0 else py(ylo))
                cv2.drawMarker(img, pt, color, cv2.MARKER_TRIANGLE_UP if v > 0 else cv2.MARKER_TRIANGLE_DOWN, 8, 1)
                prev = None
                continue
            pt = (px(i), py(v))
            if prev is not None:
                cv2.line(img, prev, pt, color, 2, cv2.LINE_AA)
            elif n == 1 or i + 1 >= len(s.values) or not math.isfinite(s.values[i + 1]):
                cv2.circle(img, pt, 2, color, -1, cv2.LINE_AA)
            prev = pt
    # legend: one row above the panel, right-aligned (never hides data)
    x = x1
    for k in range(len(panel.series) - 1, -1, -1):
        label = panel.series[k].label
        w, _ = _text_size(label)
        x -= w
        _text(img, label, (x, y0 - 10))
        x -= 30
        cv2.line(img, (x, y0 - 14), (x + 24, y0 - 14), PALETTE[k % len(PALETTE)], 3, cv2.LINE_AA)
        x -= 18


def draw_chart(
    panels: Sequence[Panel], n: int, title: str = "", width: int = 960, panel_height: int = 260
) -> np.ndarray:
    """Render stacked panels sharing an x axis of ``n`` frames into a BGR uint8 image."""
    left, right, top, gap = 90, 24, 70 if title else 36, 84
    height = top + len(panels) * panel_height + (len(panels) - 1) * gap + 56
    img = np.full((height, width, 3), 255, np.uint8)
    if title:
        _text(img, title, (left, 26), 0.6, INK, 1)
    for k, panel in enumerate(panels):
        y0 = top + k * (panel_height + gap)
        _draw_panel(img, panel, (left, y0, width - right, y0 + panel_height), n)
    return img


def write_chart(path: str | Path, panels: Sequence[Panel], n: int, title: str = "") -> Path:
    """Draw and save a PNG; returns its path."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), draw_chart(panels, n, title)):
        raise OSError(f"{path}: could not write the PNG")
    return path
