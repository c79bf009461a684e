"""Square face crops that are stable over time: per-frame boxes from landmarks, gap filling, smoothing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Crop side relative to the larger side of the landmarks' bounding box.
DEFAULT_CROP_SCALE = 1.8
#: Upward shift of the crop centre, as a fraction of the crop side (keeps the forehead in view).
DEFAULT_CROP_SHIFT_UP = 0.05
#: Gaussian smoothing of the box centre over time (frames, sigma) ...
DEFAULT_CENTER_SIGMA = 3.0
#: ... and of the box side (slower: zoom changes are distracting).
DEFAULT_SIDE_SIGMA = 12.0
#: Crops upscaled more than this (crop size / box side) are visibly soft: the video gets a warning.
SOFT_UPSCALE = 2.0
#: A gap of at most this many frames without a face between two frames with one is a detector's brief miss: the
#: face is still there, its box interpolated (see :func:`supported_frames`).
MAX_BRIDGED_GAP = 3


@dataclass(frozen=True)
class CropConfig:
    scale: float = DEFAULT_CROP_SCALE
    shift_up: float = DEFAULT_CROP_SHIFT_UP
    center_sigma: float = DEFAULT_CENTER_SIGMA
    side_sigma: float = DEFAULT_SIDE_SIGMA


def fill_missing(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill frames whose landmarks are NaN by linear interpolation between the nearest detected frames.

    Frames before the first (after the last) detection copy it. Returns ``(filled, missing_mask)``.
    Raises ValueError when no frame has landmarks.
    """
    landmarks = np.asarray(landmarks, dtype=np.float32)
    missing = np.isnan(landmarks).any(axis=(1, 2))
    if missing.all():
        raise ValueError("no face in any frame")
    if not missing.any():
        return landmarks.copy(), missing
    t = np.arange(len(landmarks))
    known = t[~missing]
    flat = landmarks.reshape(len(landmarks), -1)
    filled = np.stack([np.interp(t, known, flat[known, j]) for j in range(flat.shape[1])], axis=1)
    return filled.reshape(landmarks.shape).astype(np.float32), missing


def supported_frames(missing: np.ndarray, max_gap: int = MAX_BRIDGED_GAP) -> np.ndarray:
    """``(N,)`` bool: the frames whose (filled) box a detection supports: those with a face of their own, and those in
    a gap of at most ``max_gap`` frames with a face on both sides (a detector's brief miss: the box is interpolated
    between two sightings). Frames before the first or after the last face, or in a longer gap, are not."""
    missing = np.asarray(missing, dtype=bool)
    supported = ~missing
    n, i = len(missing), 0
    while i < n:
        if not missing[i]:
            i += 1
            continue
        j = i
        while j < n and missing[j]:
            j += 1
        if i > 0 and j < n and j - i <= max_gap:
            supported[i:j] = True
        i = j
    return supported


def face_boxes(landmarks: np.ndarray, config: CropConfig = CropConfig()) -> np.ndarray:
    """Per-frame square boxes ``(cx, cy, side)`` around ``(N, 68, 2)`` landmarks (float, source pixels)."""
    lo, hi = landmarks.min(axis=1), landmarks.max(axis=1)
    side = config.scale * (hi - lo).max(axis=1)
    center = (lo + hi) / 2.0
    center[:, 1] -= config.shift_up * side
    return np.column_stack([center, side]).astype(np.float64)


def smooth_boxes(boxes: np.ndarray, config: CropConfig = CropConfig()) -> np.ndarray:
    """Gaussian-smooth box centres and sides over time (edges: nearest)."""
    from scipy.ndimage import gaussian_filter1d

    out = np.asarray(boxes, dtype=np.float64).copy()
    if len(out) > 1:
        if config.center_sigma > 0:
            out[:, :2] = gaussian_filter1d(out[:, :2], config.center_sigma, axis=0, mode="nearest")
        if config.side_sigma > 0:
            out[:, 2] = gaussian_filter1d(out[:, 2], config.side_sigma, mode="nearest")
    return out


def integer_boxes(boxes: np.ndarray) -> np.ndarray:
    """``(cx, cy, side)`` floats -> ``(x0, y0, side)`` int32 pixel boxes (may extend past the frame)."""
    side = np.maximum(np.round(boxes[:, 2]), 1)
    x0 = np.round(boxes[:, 0] - side / 2)
    y0 = np.round(boxes[:, 1] - side / 2)
    return np.column_stack([x0, y0, side]).astype(np.int32)


def plan_crops(landmarks: np.ndarray, config: CropConfig = CropConfig()) -> np.ndarray:
    """Smoothed integer boxes ``(N, 3)`` = ``(x0, y0, side)`` for gap-filled ``(N, 68, 2)`` landmarks."""
    return integer_boxes(smooth_boxes(face_boxes(landmarks, config), config))


def crop_square(rgb: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Cut ``box = (x0, y0, side)`` out of ``rgb`` (black outside the frame) and resize to ``size``."""
    import cv2

    x0, y0, side = (int(v) for v in box)
    h, w = rgb.shape[:2]
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(canvas, (size, size), interpolation=interp)


def landmarks_to_crop(landmarks: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Map source-pixel landmarks into the pixels of the ``size``-square crop of ``box``.

    Pixel centres are kept consistent with ``cv2.resize``: crop pixel ``u`` covers source ``x0 + (u + .5) s - .5``.
    """
    x0, y0, side = (float(v) for v in box)
    s = size / side
    out = np.empty_like(landmarks, dtype=np.float32)
    out[..., 0] = (landmarks[..., 0] - x0 + 0.5) * s - 0.5
    out[..., 1] = (landmarks[..., 1] - y0 + 0.5) * s - 0.5
    return out


def upscale_warning(source: object, landmarks: np.ndarray, boxes: np.ndarray, size: int) -> str | None:
    """A warning naming the face width and the upscale when the ``size`` crops of ``boxes`` (``(N, 3)``, see
    :func:`plan_crops`) are upscaled more than :data:`SOFT_UPSCALE` on the median frame; None otherwise.

    ``landmarks``: ``(N, 68, 2)`` in source pixels (the face width is their median horizontal extent).
    """
    if len(boxes) == 0:
        return None
    side = float(np.median(boxes[:, 2]))
    factor = size / side
    if factor <= SOFT_UPSCALE:
        return None
    face = float(np.median(np.ptp(landmarks[..., 0], axis=1)))
    return (
        f"{source}: face is {face:.0f} px wide; its {size}-px crop is upscaled {factor:.1f}x from {side:.0f} px of "
        "the video, so the result will be soft (a source with a larger face gives a sharper one)"
    )
