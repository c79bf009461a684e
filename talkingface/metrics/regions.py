"""Image regions from landmarks: the boxes that PSNR and SSIM are measured on (iBUG 68-point layout).

Shared by validation during training (:func:`talkingface.metrics.batch.batch_metrics`) and by evaluation
(``talkingface.evaluate``), so a "mouth PSNR" means one region everywhere.
"""

from __future__ import annotations

import numpy as np

#: Mouth points (outer 48-59, inner 60-67).
MOUTH = slice(48, 68)


def points_box(
    points: np.ndarray, image_hw: tuple[int, int], margin: float, min_side: int = 11
) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (exclusive end) around ``points``, grown by ``margin`` of its size on each side,
    grown further to at least ``min_side`` pixels (SSIM's window), clipped to the image."""
    h, w = image_hw
    lo, hi = points.min(axis=0), points.max(axis=0)
    size = hi - lo
    lo, hi = lo - margin * size, hi + margin * size
    box = []
    for a, b, limit in ((lo[0], hi[0], w), (lo[1], hi[1], h)):
        a, b = int(np.floor(a)), int(np.ceil(b)) + 1
        if b - a < min_side:
            grow = min_side - (b - a)
            a, b = a - grow // 2, b + grow - grow // 2
        a, b = max(a, 0), min(b, limit)
        if b - a < min_side:  # at an image edge: shift inwards
            a, b = (0, min(min_side, limit)) if a == 0 else (max(limit - min_side, 0), limit)
        box.append((a, b))
    (x0, x1), (y0, y1) = box
    return x0, y0, x1, y1


def face_box(lms: np.ndarray, image_hw: tuple[int, int], margin: float = 0.1) -> tuple[int, int, int, int]:
    """Box around all 68 points (the face crop used for PSNR/SSIM)."""
    return points_box(lms, image_hw, margin)


def mouth_box(lms: np.ndarray, image_hw: tuple[int, int], margin: float = 0.25) -> tuple[int, int, int, int]:
    """Box around the mouth points 48-67 (the mouth region used for PSNR/SSIM)."""
    return points_box(lms[MOUTH], image_hw, margin)


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]
