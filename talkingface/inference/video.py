"""The source video in memory (or in a temporary memory map when large): frames, smoothed face boxes, landmarks."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from talkingface.constants import DEFAULT_IMAGE_SIZE, FPS
from talkingface.inference.landmark_file import SourceLandmarks, landmarks_at_fps, read_landmarks
from talkingface.media.crop import MAX_BRIDGED_GAP, CropConfig, crop_square, landmarks_to_crop, supported_frames
from talkingface.media.decode import iter_frames
from talkingface.media.errors import PreprocessError
from talkingface.media.extract import DEFAULT_MAX_MISSING, analyse_landmarks, analyse_video
from talkingface.media.face_choice import LARGEST, FaceChoice
from talkingface.media.landmarks import LandmarkDetector

log = logging.getLogger(__name__)

#: Decoded frames above this size go to a memory-mapped temporary file instead of RAM.
IN_MEMORY_LIMIT_BYTES = 1 << 30
#: The passes ``prepare_video`` reports to its ``on_frame``: the face search (dlib), the decoding of the frames kept.
FACE_SEARCH, FRAME_DECODING = "face search", "frame decoding"
#: ``on_frame(pass, frames done, expected total or None)``.
FrameHook = Callable[[str, int, int | None], None]


@dataclass
class PreparedVideo:
    """A preprocessed source video: 25 fps frames, crop boxes and 68-point landmarks (source pixels)."""

    path: Path
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB (possibly a np.memmap)
    boxes: np.ndarray  # (N, 3) int32 (x0, y0, side), smoothed over time
    landmarks: np.ndarray  # (N, 68, 2) float32 in source pixels, gaps filled
    missing: np.ndarray  # (N,) bool: no face detected (or no landmarks given) in that frame
    crop_size: int = DEFAULT_IMAGE_SIZE
    fps: float = FPS

    @cached_property
    def pasted(self) -> np.ndarray:
        """``(N,)`` bool: the frames a generated mouth is pasted into: those whose box a detection supports (a face
        of their own, or on both sides of a brief miss: :func:`~talkingface.media.crop.supported_frames`). The others
        keep their source image."""
        return supported_frames(self.missing)

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    def crop(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(crop (S, S, 3) uint8, landmarks (68, 2) float32 in crop pixels)`` of frame ``index`` (S: crop_size)."""
        box = self.boxes[index]
        return (
            crop_square(np.asarray(self.frames[index]), box, self.crop_size),
            landmarks_to_crop(self.landmarks[index], box, self.crop_size),
        )


def _frame_buffer(shape: tuple[int, ...]) -> np.ndarray:
    if int(np.prod(shape)) <= IN_MEMORY_LIMIT_BYTES:
        return np.empty(shape, dtype=np.uint8)
    log.info("video frames take %.1f GiB: keeping them in a temporary memory-mapped file", np.prod(shape) / 2**30)
    return np.memmap(tempfile.TemporaryFile(), dtype=np.uint8, mode="w+", shape=shape)


def prepare_video(
    path: str | Path,
    *,
    crop_size: int = DEFAULT_IMAGE_SIZE,
    fps: float = FPS,
    detector: LandmarkDetector | None = None,
    crop: CropConfig | None = None,
    max_missing: float = DEFAULT_MAX_MISSING,
    landmarks: str | Path | SourceLandmarks | None = None,
    face: FaceChoice = LARGEST,
    progress: bool = False,
    on_frame: FrameHook | None = None,
) -> PreparedVideo:
    """Find the face in every 25 fps frame (as the dataset builder does) and keep the decoded frames.

    ``landmarks``: landmarks of every frame at the video's own rate (a ``--landmarks`` file or folder, see
    :mod:`talkingface.inference.landmark_file`) used instead of the dlib detector, which is then never built;
    the crop boxes come from them exactly as from detections.
    ``face``: which face dlib follows (``--face``, see :mod:`talkingface.media.face_choice`); not used with
    ``landmarks``.
    ``on_frame``: called after every frame of each pass with ``(pass, frames done, expected total or None)``, the
    pass being :data:`FACE_SEARCH` (dlib, the long one) or :data:`FRAME_DECODING` (progress, cancelling: an exception
    raised there stops the preparation and propagates).

    Raises:
        PreprocessError: unreadable file, no video stream, no face (in more than ``max_missing`` of the frames).
        InferenceError: a landmarks file that does not match the video.
    """
    path = Path(path)
    if landmarks is None:
        analysis = analyse_video(
            path,
            fps=fps,
            detector=detector,
            crop=crop,
            audio=False,
            max_missing=max_missing,
            face=face,
            image_size=crop_size,
            progress=progress,
            on_frame=None if on_frame is None else lambda done, total: on_frame(FACE_SEARCH, done, total),
        )
    else:
        if not isinstance(landmarks, SourceLandmarks):
            landmarks = read_landmarks(landmarks)
        points = landmarks_at_fps(landmarks, path, fps)
        analysis = analyse_landmarks(
            path, points, fps=fps, crop=crop, max_missing=max_missing, source=landmarks.path, image_size=crop_size
        )
    for message in analysis.warnings:
        log.warning(message)
    kept = np.flatnonzero(~supported_frames(analysis.missing))
    if len(kept):
        log.warning(
            "%s: %d frames keep their source image (no face in them, nor on both sides within %d frames): %s%s",
            landmarks.path if isinstance(landmarks, SourceLandmarks) else path,
            len(kept),
            MAX_BRIDGED_GAP,
            kept[:20].tolist(),
            " ..." if len(kept) > 20 else "",
        )
    frames: np.ndarray | None = None
    count = 0
    for i, rgb in enumerate(iter_frames(path, fps)):
        if i >= analysis.n_frames:
            break
        if frames is None:
            frames = _frame_buffer((analysis.n_frames, *rgb.shape))
        frames[i] = rgb
        count += 1
        if on_frame is not None:
            on_frame(FRAME_DECODING, count, analysis.n_frames)
    if frames is None or count < analysis.n_frames:
        raise PreprocessError(path, f"only {count} of {analysis.n_frames} frames on the second decoding pass")
    return PreparedVideo(path, frames, analysis.boxes, analysis.landmarks, analysis.missing, crop_size, fps)
