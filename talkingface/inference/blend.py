"""Paste a generated face crop back into the source frame inside a feathered mouth/jaw polygon."""

from __future__ import annotations

import math

import numpy as np

from talkingface.constants import INFERENCE_MASK_ROWS

#: Gaussian feather (sigma) as a fraction of the crop side.
DEFAULT_FEATHER = 0.02
#: Alpha below this is treated as 0 (the source pixel is kept exactly).
ALPHA_FLOOR = 1.0 / 512


def mouth_alpha(landmarks68: np.ndarray, size: int, feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """``(size, size)`` float32 in [0, 1]: 1 inside the polygon of jaw points 2..14 and landmark 33 (the region
    the model generates), blurred by a Gaussian of sigma ``feather * size``, exactly 0 further away."""
    import cv2

    alpha = np.zeros((size, size), dtype=np.float32)
    points = np.round(np.asarray(landmarks68)[list(INFERENCE_MASK_ROWS)]).astype(np.int32)
    cv2.fillPoly(alpha, pts=[points], color=1.0)
    sigma = feather * size
    if sigma > 0:
        k = 2 * math.ceil(3 * sigma) + 1
        alpha = cv2.GaussianBlur(alpha, (k, k), sigma, borderType=cv2.BORDER_CONSTANT)
    alpha[alpha < ALPHA_FLOOR] = 0.0
    return np.clip(alpha, 0.0, 1.0)


def paste_back(frame: np.ndarray, generated: np.ndarray, alpha: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Blend ``generated`` (a square crop of ``box``) into a copy of ``frame`` with weight ``alpha``.

    ``generated`` and ``alpha`` (any square sizes) are resized to the box side (``x0, y0, side`` in frame pixels)
    and blended where the box overlaps the frame. Pixels where the resized alpha is 0 keep their source value
    exactly.
    """
    import cv2

    out = np.array(frame, dtype=np.uint8, copy=True)
    x0, y0, side = (int(v) for v in box)
    h, w = out.shape[:2]
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if fx1 <= fx0 or fy1 <= fy0:
        return out
    a = cv2.resize(alpha, (side, side), interpolation=cv2.INTER_LINEAR)[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    rows, cols = np.nonzero(a > 0)
    if len(rows) == 0:
        return out
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    interp = cv2.INTER_AREA if side < generated.shape[0] else cv2.INTER_CUBIC
    g = cv2.resize(generated, (side, side), interpolation=interp)[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    a, g = a[r0:r1, c0:c1, None], g[r0:r1, c0:c1].astype(np.float32)
    region = out[fy0 + r0 : fy0 + r1, fx0 + c0 : fx0 + c1]
    blended = region.astype(np.float32) * (1.0 - a) + g * a
    out[fy0 + r0 : fy0 + r1, fx0 + c0 : fx0 + c1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


#: Model-image pixels added around the paste-back region for the resize in :func:`paste_back` (cubic: 2 taps per
#: side at the model's scale, plus rounding).
RESIZE_SUPPORT_PX = 3


def paste_window(
    alphas: list[np.ndarray] | np.ndarray, image_size: int, latent_size: int, margin: int
) -> tuple[int, int, int, int]:
    """Latent window ``(y0, y1, x0, x1)`` (cells) that covers every pixel :func:`paste_back` reads from a generated
    ``image_size`` face for these paste-back ``alphas`` (square, any size), plus ``margin`` latent cells of decoder
    context, clamped to the latent. One window for the batch: the union of the frames' regions."""
    y0 = x0 = float("inf")
    y1 = x1 = float("-inf")
    for alpha in alphas:
        rows, cols = np.nonzero(np.asarray(alpha) > 0)
        if len(rows) == 0:
            continue
        s = image_size / alpha.shape[0]  # alpha pixel -> model pixel
        y0, y1 = min(y0, rows.min() * s), max(y1, (rows.max() + 1) * s)
        x0, x1 = min(x0, cols.min() * s), max(x1, (cols.max() + 1) * s)
    if y0 == float("inf"):  # nothing is pasted: the smallest window
        return 0, 1, 0, 1
    f = image_size / latent_size
    pad = RESIZE_SUPPORT_PX + math.ceil(s)  # and one alpha pixel for its linear resize

    def cells(lo: float, hi: float) -> tuple[int, int]:
        a = math.floor((lo - pad) / f) - margin
        b = math.ceil((hi + pad) / f) + margin
        return max(a, 0), min(b, latent_size)

    (ry0, ry1), (rx0, rx1) = cells(y0, y1), cells(x0, x1)
    return ry0, ry1, rx0, rx1
