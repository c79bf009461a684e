"""Landmarks found by another tool (``--landmarks``): read, checked against the video, mapped to its 25 fps frames.

Two formats, both 68 iBUG points ``(x, y)`` in pixels of the video, one entry per frame of the video at its own
frame rate (frames counted from 0 in presentation order):

* an ``(N, 68, 2)`` ``.npy`` array, e.g. the synthetic generator's ``<clip>.landmarks.npy`` sidecar;
* a folder of ``<frame>.lms`` files (``0.lms``, ``1.lms``, ... ; zero padding allowed), each 68 rows ``"x y"``
  as the dataset's landmark files (``talkingface.data.layout``).

A frame whose points are NaN has no face (filled from its neighbours, within ``--max-missing``). Every other frame
must hold a face of that video: at least :data:`MIN_INSIDE` of its landmarks' bounding box inside the frame (a face
at the border may be partly outside it), spanning at most :data:`MAX_FACE_SPAN` times the frame's larger side and
at least :data:`MIN_FACE_PX` pixels. Coordinates of another resolution, an offset, or a sentinel such as -1000 for
"no face" are refused, naming the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkingface.constants import FPS, N_LANDMARKS
from talkingface.data.layout import LANDMARKS
from talkingface.inference.errors import InferenceError
from talkingface.media.decode import map_frames, probe_video
from talkingface.npy import read_npy

#: Suffix of one frame's landmark file in a ``--landmarks`` folder (the dataset layout's).
LMS_SUFFIX = LANDMARKS.suffix
#: Landmarks spanning fewer pixels than this in every frame are taken for normalised coordinates (in one frame: for
#: a placeholder, not a face).
MIN_FACE_PX = 2.0
#: The least fraction of a frame's landmark bounding box that must lie inside the video frame.
MIN_INSIDE = 0.25
#: A frame's landmarks may span at most this many times the video's larger side.
MAX_FACE_SPAN = 2.0


@dataclass(frozen=True)
class SourceLandmarks:
    """Landmarks of every source frame of a video, as read from ``path``."""

    path: Path
    points: np.ndarray  # (N, 68, 2) float32 in video pixels, N = the video's own frame count; NaN: no face

    @property
    def n_frames(self) -> int:
        return len(self.points)


def _read_npy(path: Path) -> np.ndarray:
    try:
        return read_npy(path)  # the header is checked first: a claim of 10^9 frames takes no memory
    except (OSError, ValueError, EOFError) as e:
        raise InferenceError(path, f"unreadable as a .npy array ({e})") from None


def _read_lms_folder(path: Path) -> np.ndarray:
    files = sorted(path.glob(f"*{LMS_SUFFIX}"))
    if not files:
        raise InferenceError(path, f"no {LMS_SUFFIX} files (expected <frame>{LMS_SUFFIX}, frames from 0)")
    by_frame: dict[int, Path] = {}
    for f in files:
        stem = f.name[: -len(LMS_SUFFIX)]
        if not stem.isdigit():
            raise InferenceError(f, f"not named <frame>{LMS_SUFFIX} (frames counted from 0)")
        if int(stem) in by_frame:
            raise InferenceError(f, f"frame {int(stem)} also in {by_frame[int(stem)].name}")
        by_frame[int(stem)] = f
    absent = sorted(set(range(max(by_frame) + 1)) - set(by_frame))
    if absent:
        raise InferenceError(path, f"no {LMS_SUFFIX} file for frames {absent[:10]}{' ...' if len(absent) > 10 else ''}")
    rows = []
    for frame in range(len(by_frame)):
        f = by_frame[frame]
        try:
            points = np.loadtxt(f, dtype=np.float32, ndmin=2)
        except (OSError, ValueError) as e:
            raise InferenceError(f, f"unreadable ({e})") from None
        if points.shape != (N_LANDMARKS, 2):
            raise InferenceError(f, f"expected {N_LANDMARKS} rows 'x y', got shape {points.shape}")
        rows.append(points)
    return np.stack(rows)


def read_landmarks(path: str | Path) -> SourceLandmarks:
    """Read and check a ``--landmarks`` file or folder (see the module docstring); the video is not needed.

    Raises:
        InferenceError: missing, unreadable, wrong shape, infinite or normalised coordinates (naming the file).
    """
    path = Path(path)
    if path.is_dir():
        points = _read_lms_folder(path)
    elif path.is_file():
        points = _read_npy(path)
    else:
        raise InferenceError(path, "landmarks file or folder not found")
    if points.ndim != 3 or points.shape[1:] != (N_LANDMARKS, 2):
        raise InferenceError(
            path, f"landmarks of shape {points.shape}; expected (frames, {N_LANDMARKS}, 2): (x, y) in video pixels"
        )
    if len(points) == 0:
        raise InferenceError(path, "landmarks for 0 frames")
    if not (np.issubdtype(points.dtype, np.floating) or np.issubdtype(points.dtype, np.integer)):
        raise InferenceError(path, f"landmarks of dtype {points.dtype}; expected numbers")
    points = points.astype(np.float32)
    if np.isinf(points).any():
        raise InferenceError(path, "infinite landmark coordinates (use NaN for a frame without a face)")
    found = ~np.isnan(points).any(axis=(1, 2))
    if found.any():
        extent = np.ptp(points[found], axis=1).max()
        if extent < MIN_FACE_PX:
            raise InferenceError(
                path, f"landmarks span under {MIN_FACE_PX:g} pixels: expected video pixels, not normalised coordinates"
            )
    return SourceLandmarks(path, points)


def landmarks_at_fps(landmarks: SourceLandmarks, video: str | Path, fps: float = FPS) -> np.ndarray:
    """The landmarks of the ``fps`` frames ``iter_frames(video, fps)`` yields: ``(K, 68, 2)`` float32.

    Output frame ``k`` takes the landmarks of the source frame it shows (``media.decode.map_frames``).

    Raises:
        InferenceError: the file does not have one entry per frame of the video, or a frame's landmarks are not a face
            in it (:func:`check_in_frame`).
    """
    probe = probe_video(video)
    check_in_frame(landmarks, probe.width, probe.height)
    frames = map_frames(video, fps)
    if landmarks.n_frames != frames.n_source:
        rate = f" at its own {frames.source_fps:g} fps" if frames.source_fps else ""
        raise InferenceError(
            landmarks.path,
            f"landmarks for {landmarks.n_frames} frames, but {Path(video).name} has {frames.n_source} frames{rate}",
        )
    return landmarks.points[frames.source]


def check_in_frame(landmarks: SourceLandmarks, width: int, height: int) -> None:
    """Every frame with landmarks must show a face in the ``width x height`` video (see the module docstring).

    Raises:
        InferenceError: naming the file, the first bad frame (counted from 0, as in the file), its coordinates, and
            how many other frames are bad.
    """
    found = np.flatnonzero(~np.isnan(landmarks.points).any(axis=(1, 2)))
    if len(found) == 0:
        return
    points = landmarks.points[found].astype(np.float64)
    lo, hi = points.min(axis=1), points.max(axis=1)  # (n, 2) each
    span = hi - lo
    size = np.array([width, height], dtype=np.float64)
    extent = np.maximum(span, 1.0)  # a box at least one pixel wide: points on one spot are inside or not
    overlap = np.clip(np.minimum(lo + extent, size) - np.maximum(lo, 0.0), 0.0, None) / extent
    outside = np.prod(np.minimum(overlap, 1.0), axis=1) < MIN_INSIDE
    too_large = span.max(axis=1) > MAX_FACE_SPAN * size.max()
    placeholder = span.max(axis=1) < MIN_FACE_PX
    bad = outside | too_large | placeholder
    if not bad.any():
        return
    k = int(np.argmax(bad))
    where = f"x {lo[k, 0]:.6g}..{hi[k, 0]:.6g}, y {lo[k, 1]:.6g}..{hi[k, 1]:.6g}"
    if outside[k]:
        problem = (
            f"landmarks at {where} lie outside the {width}x{height} video (at least {MIN_INSIDE:.0%} of a face's "
            "landmark box must be inside the frame)"
        )
    elif too_large[k]:
        problem = (
            f"landmarks span {span[k, 0]:.6g} x {span[k, 1]:.6g} px ({where}), more than {MAX_FACE_SPAN:g} times "
            f"the {width}x{height} video"
        )
    else:
        problem = f"all {N_LANDMARKS} landmarks lie within {MIN_FACE_PX:g} px ({where}): a placeholder, not a face"
    n_bad = int(bad.sum())
    more = f" ({n_bad - 1} more frames like it)" if n_bad > 1 else ""
    hint = "expected pixels of this video, NaN for a frame without a face"
    raise InferenceError(landmarks.path, f"frame {found[k]}: {problem}{more}; {hint}")
