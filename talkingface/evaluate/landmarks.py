"""Landmark-based metrics: LMD and mouth opening (iBUG 68-point layout); the face and mouth boxes that PSNR and
SSIM are measured on are :mod:`talkingface.metrics.regions`.

LMD (landmark distance, Chen et al. 2018, as reported by DiffTalk and Wav2Lip-style papers): per frame, the
mean Euclidean distance between the predicted and ground-truth mouth points 48-67, in pixels of the
evaluated (ground-truth) resolution; then averaged over the frames where both faces were found. No
alignment or normalisation is applied; ``lmd_norm`` additionally divides each frame's LMD by the
ground truth's outer-eye-corner distance (points 36-45) so numbers compare across resolutions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from talkingface.evaluate.errors import EvaluationError
from talkingface.evaluate.media import natural_key
from talkingface.metrics.regions import MOUTH
from talkingface.npy import read_npy

log = logging.getLogger(__name__)

N_POINTS = 68
#: Inner-lip middle points, top and bottom: their distance is the mouth opening.
INNER_LIP_TOP, INNER_LIP_BOTTOM = 62, 66
#: Outer eye corners: the face-size unit.
EYE_LEFT, EYE_RIGHT = 36, 45

#: A landmark detector: RGB uint8 (H, W, 3) -> (68, 2) float32 (x, y) pixels, or None when no face is found.
Detector = Callable[[np.ndarray], "np.ndarray | None"]


def default_detector() -> Detector:
    """The project's dlib detector (``talkingface.media.landmarks``), imported lazily."""
    from talkingface.media.landmarks import shared_detector

    return shared_detector()


def landmarks_for(frames: Sequence[np.ndarray], source: np.ndarray | Detector) -> list[np.ndarray | None]:
    """Landmarks of every frame: taken from an ``(N, 68, 2)`` array or computed with a detector callable."""
    if callable(source):
        out = []
        for frame in frames:
            lms = source(frame)
            out.append(None if lms is None else np.asarray(lms, dtype=np.float64).reshape(N_POINTS, 2))
        missing = sum(x is None for x in out)
        if missing:
            log.warning("no face found in %d of %d frames", missing, len(out))
        return out
    arr = np.asarray(source, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (N_POINTS, 2):
        raise ValueError(f"precomputed landmarks must be (N, 68, 2), got {arr.shape}")
    if len(arr) < len(frames):
        raise ValueError(f"{len(arr)} precomputed landmark sets for {len(frames)} frames")
    return [None if not np.isfinite(a).all() else a for a in arr[: len(frames)]]


def _load_npy(path: Path) -> np.ndarray:
    try:
        return read_npy(path)  # the header is checked first: a huge declared shape takes no memory
    except (OSError, ValueError, EOFError) as e:
        raise EvaluationError(path, f"unreadable as a .npy array ({e})") from None


def load_landmarks(path: str | Path) -> np.ndarray:
    """Precomputed landmarks: an ``.npy`` of shape (N, 68, 2), or a directory of per-frame ``.lms``/``.txt``/``.npy``
    files (68 rows of ``x y``, naturally sorted, the dataset layout's ``landmarks/`` format)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if p.suffix in (".lms", ".txt", ".npy")), key=lambda p: natural_key(p.name)
        )
        if not files:
            raise EvaluationError(path, "directory holds no .lms/.txt/.npy landmark files")
        arr = np.stack([_load_npy(f) if f.suffix == ".npy" else np.loadtxt(f) for f in files])
    elif path.is_file():
        arr = _load_npy(path)
    else:
        raise EvaluationError(path, "no such landmark file or directory")
    if arr.ndim != 3 or arr.shape[1:] != (N_POINTS, 2):
        raise EvaluationError(path, f"landmarks must have shape (N, 68, 2), got {arr.shape}")
    return arr.astype(np.float64)


def eye_distance(lms: np.ndarray) -> float:
    """Outer-eye-corner distance (points 36 and 45), the face-size unit."""
    return float(np.linalg.norm(lms[EYE_RIGHT] - lms[EYE_LEFT]))


def lmd_frame(pred: np.ndarray | None, gt: np.ndarray | None) -> float:
    """Mean Euclidean distance (pixels) between the mouth points 48-67 of two landmark sets; NaN if one is missing."""
    if pred is None or gt is None:
        return float("nan")
    return float(np.linalg.norm(np.asarray(pred)[MOUTH] - np.asarray(gt)[MOUTH], axis=1).mean())


def lmd(pred: Sequence[np.ndarray | None], gt: Sequence[np.ndarray | None]) -> np.ndarray:
    """Per-frame LMD (pixels), NaN where either face is missing; average with ``np.nanmean``."""
    if len(pred) != len(gt):
        raise ValueError(f"landmark sequences differ in length: {len(pred)} and {len(gt)}")
    return np.array([lmd_frame(p, g) for p, g in zip(pred, gt)], dtype=np.float64)


def mouth_opening(lms: np.ndarray | None) -> float:
    """Inner-lip opening ``|p62 - p66|`` divided by the outer-eye-corner distance; NaN when missing."""
    if lms is None:
        return float("nan")
    lms = np.asarray(lms)
    eyes = eye_distance(lms)
    if eyes <= 0:
        return float("nan")
    return float(np.linalg.norm(lms[INNER_LIP_TOP] - lms[INNER_LIP_BOTTOM]) / eyes)
