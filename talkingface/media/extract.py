"""One portrait video -> 25 fps square face crops, landmarks in crop pixels, crop boxes and 16 kHz audio.

Two passes over the video keep memory flat: pass 1 detects landmarks on every frame, pass 2 crops with the
smoothed boxes. :func:`extract_video` collects everything in memory (inference on one clip);
the dataset writer streams pass 2 to disk instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from talkingface.constants import DEFAULT_IMAGE_SIZE, FPS, N_LANDMARKS, SAMPLE_RATE
from talkingface.media.crop import (
    CropConfig,
    crop_square,
    fill_missing,
    landmarks_to_crop,
    plan_crops,
    upscale_warning,
)
from talkingface.media.decode import (
    VideoProbe,
    align_audio,
    frames_for_seconds,
    iter_frames,
    load_audio,
    probe_video,
)
from talkingface.media.errors import PreprocessError
from talkingface.media.face_choice import LARGEST, FaceChoice, FaceChoiceError, FaceTracker
from talkingface.media.face_search import FaceSearch
from talkingface.media.landmarks import LandmarkDetector, shared_detector

log = logging.getLogger(__name__)

#: A video fails when more than this fraction of its frames has no detectable face.
DEFAULT_MAX_MISSING = 0.2
#: Audio and video lengths may differ by this much (seconds); the longer one is trimmed.
DEFAULT_MAX_AV_GAP_S = 1.0
#: Peak amplitude below which an audio track counts as silent.
SILENCE_PEAK = 1e-4


@dataclass
class VideoAnalysis:
    """Result of the detection pass over one video (all per-frame arrays have ``n_frames`` rows)."""

    path: Path
    n_frames: int
    landmarks: np.ndarray  # (N, 68, 2) float32 source pixels, gaps filled
    missing: np.ndarray  # (N,) bool: no face detected, landmarks interpolated
    boxes: np.ndarray  # (N, 3) int32 (x0, y0, side) smoothed crop boxes in source pixels
    audio: np.ndarray | None  # 16 kHz mono float32 aligned to frame 0, or None
    source_size: tuple[int, int]  # (width, height)
    fps: float = FPS
    warnings: list[str] = field(default_factory=list)

    @property
    def n_missing(self) -> int:
        return int(self.missing.sum())


@dataclass
class ExtractedVideo:
    """A preprocessed clip in memory."""

    frames: np.ndarray  # (N, S, S, 3) uint8 RGB crops
    landmarks: np.ndarray  # (N, 68, 2) float32, pixels of the S x S crops
    boxes: np.ndarray  # (N, 3) int32 (x0, y0, side) in source pixels
    missing: np.ndarray  # (N,) bool
    audio: np.ndarray | None  # 16 kHz mono float32 aligned with frame 0
    fps: float
    size: int


def check_av_lengths(path: Path, n_video: int, n_audio: int, fps: float, max_gap_s: float) -> int:
    """Frames to keep given video and audio lengths (in frames); fail when they differ by more than ``max_gap_s``."""
    if n_audio <= 0:
        raise PreprocessError(path, f"audio is too short ({n_audio / fps:.2f} s) to cover one frame")
    gap = abs(n_video - n_audio) / fps
    if gap > max_gap_s:
        raise PreprocessError(
            path,
            f"audio lasts {n_audio / fps:.2f} s but video {n_video / fps:.2f} s (gap {gap:.2f} s > "
            f"--max-av-gap {max_gap_s} s); is it the right audio track?",
        )
    return min(n_video, n_audio)


def _load_aligned_audio(video: Path, audio_path: Path | None, video_start: float, allow_silent: bool) -> np.ndarray:
    audio = load_audio(audio_path or video, SAMPLE_RATE)
    samples = align_audio(audio, video_start if audio_path is None else audio.start_s)
    source = audio_path or video
    if len(samples) == 0:
        raise PreprocessError(source, "audio track is empty")
    if not allow_silent and float(np.abs(samples).max()) < SILENCE_PEAK:
        raise PreprocessError(source, "audio track is silent (peak < 1e-4); pass --allow-silent to keep it")
    return samples


def _fill_gaps(
    raw: np.ndarray, source: Path, max_missing: float, warnings: list[str], failure: str, gap: str
) -> tuple[np.ndarray, np.ndarray]:
    """Fill the frames without landmarks (NaN rows) from their neighbours; fail when more than ``max_missing`` of
    them (or all) have none. ``failure`` / ``gap`` word the error and the warning (e.g. "no face found" / "no face")."""
    n = len(raw)
    try:
        filled, missing = fill_missing(raw)
    except ValueError:
        raise PreprocessError(source, f"{failure} in any of its {n} frames") from None
    n_missing = int(missing.sum())
    if n_missing > max_missing * n:
        raise PreprocessError(
            source,
            f"{failure} in {n_missing} of {n} frames ({100 * n_missing / n:.0f}% > --max-missing "
            f"{100 * max_missing:.0f}%); first misses at frames {np.flatnonzero(missing)[:10].tolist()}",
        )
    if n_missing:
        warnings.append(
            f"{source}: {gap} in {n_missing} of {n} frames (filled from neighbours): "
            f"{np.flatnonzero(missing)[:20].tolist()}{' ...' if n_missing > 20 else ''}"
        )
    return filled, missing


def _with_crops(
    path: Path,
    probe: VideoProbe,
    landmarks: np.ndarray,
    missing: np.ndarray,
    audio: np.ndarray | None,
    crop: CropConfig,
    image_size: int | None,
    fps: float,
    warnings: list[str],
) -> VideoAnalysis:
    """The analysis from gap-filled ``landmarks``: the smoothed crop boxes planned, and a warning added when crops of
    ``image_size`` would be upscaled more than :data:`~talkingface.media.crop.SOFT_UPSCALE`."""
    boxes = plan_crops(landmarks, crop)
    soft = None if image_size is None else upscale_warning(path, landmarks, boxes, image_size)
    if soft:
        warnings.append(soft)
    return VideoAnalysis(
        path=path,
        n_frames=len(landmarks),
        landmarks=landmarks,
        missing=missing,
        boxes=boxes,
        audio=audio,
        source_size=(probe.width, probe.height),
        fps=fps,
        warnings=warnings,
    )


def analyse_video(
    path: str | Path,
    *,
    fps: float = FPS,
    detector: LandmarkDetector | None = None,
    crop: CropConfig | None = None,
    audio: bool | str | Path = True,
    max_missing: float = DEFAULT_MAX_MISSING,
    max_av_gap_s: float = DEFAULT_MAX_AV_GAP_S,
    allow_silent: bool = False,
    n_frames_limit: int | None = None,
    face: FaceChoice = LARGEST,
    image_size: int | None = None,
    progress: bool = False,
    on_frame: Callable[[int, int | None], None] | None = None,
) -> VideoAnalysis:
    """Detection pass: landmarks on every 25 fps frame, gap filling, smoothed crop boxes, aligned audio.

    A :class:`~talkingface.media.landmarks.LandmarkDetector` searches each video through a
    :class:`~talkingface.media.face_search.FaceSearch`: frames without a face at its default scale are searched
    again upsampled (faces down to about 40 px); other detectors (tests, scripted boxes) are used as given.

    Args:
        audio: True: the video's own track; a path: a separate audio file; False: no audio.
        n_frames_limit: keep at most this many frames (e.g. the length of precomputed audio features).
        face: which face (``--face``, :mod:`talkingface.media.face_choice`): the largest in each frame, or one
            chosen in the first frame with a face and tracked; a frame where it is lost counts as without a face.
        image_size: side of the crops that will be cut (``iter_crops``); when they are upscaled more than
            :data:`~talkingface.media.crop.SOFT_UPSCALE`, a warning names the face size and the upscale.
        on_frame: called after each frame is searched with ``(frames searched, expected total or None)`` (progress,
            cancelling: an exception raised there stops the pass and propagates).
    Raises:
        PreprocessError: no video/audio stream, undecodable file, too many frames without a face (or the chosen
            one), A/V mismatch, ``--face`` naming a face that is not there.
    """
    path = Path(path)
    probe = probe_video(path)
    samples = None
    if audio is not False:
        samples = _load_aligned_audio(path, None if audio is True else Path(audio), probe.start_s, allow_silent)
    detector = detector or shared_detector()
    if isinstance(detector, LandmarkDetector):
        detector = FaceSearch(detector, path)
    crop = crop or CropConfig()
    rows: list[np.ndarray] = []
    nan = np.full((N_LANDMARKS, 2), np.nan, dtype=np.float32)
    frames = iter_frames(path, fps)
    total = probe.expected_frames(fps)  # an estimate from the container: the bar gets a total and an ETA
    tracker = None if face.is_largest else FaceTracker(face)
    for rgb in tqdm(frames, total=total, desc=f"detect {path.name}", unit="frame", disable=not progress, leave=False):
        if tracker is None:
            found = detector(rgb)  # the largest face
        else:
            try:
                box = tracker.update(detector.detect_boxes(rgb))
            except FaceChoiceError as e:
                raise PreprocessError(path, str(e)) from None
            found = None if box is None else detector.landmarks_in_box(rgb, box)
        rows.append(nan if found is None else found)
        if on_frame is not None:
            on_frame(len(rows), total)
    n_video = len(rows)
    n = n_video
    if samples is not None:
        n = check_av_lengths(path, n_video, frames_for_seconds(len(samples) / SAMPLE_RATE, fps), fps, max_av_gap_s)
    if n_frames_limit is not None:
        n = check_av_lengths(path, n, n_frames_limit, fps, max_av_gap_s)
    raw = np.stack(rows[:n])
    warnings: list[str] = []
    if n < n_video:
        warnings.append(f"{path}: kept {n} of {n_video} frames to match the audio length")
    failure, gap = ("no face found", "no face") if tracker is None else (f"--face {face}: face not found or lost",) * 2
    landmarks, missing = _fill_gaps(raw, path, max_missing, warnings, failure, gap)
    if samples is not None:
        samples = samples[: int(round(n / fps * SAMPLE_RATE))]
    return _with_crops(path, probe, landmarks, missing, samples, crop, image_size, fps, warnings)


def analyse_landmarks(
    path: str | Path,
    landmarks: np.ndarray,
    *,
    fps: float = FPS,
    crop: CropConfig | None = None,
    max_missing: float = DEFAULT_MAX_MISSING,
    source: str | Path | None = None,
    image_size: int | None = None,
) -> VideoAnalysis:
    """The detection pass's result from landmarks found elsewhere (no dlib): ``landmarks (N, 68, 2)`` in source
    pixels, one row per ``fps`` frame of the video ``path``, NaN rows where there is no face.

    Gap filling, the ``max_missing`` check and the crop planning are those of :func:`analyse_video` (no audio).
    ``source`` (default ``path``) is the file errors name; ``image_size`` as for :func:`analyse_video`.

    Raises:
        PreprocessError: too many frames without landmarks.
    """
    path = Path(path)
    source = Path(source) if source is not None else path
    probe = probe_video(path)
    warnings: list[str] = []
    filled, missing = _fill_gaps(landmarks, source, max_missing, warnings, "no landmarks", "no landmarks")
    return _with_crops(path, probe, filled, missing, None, crop or CropConfig(), image_size, fps, warnings)


def iter_crops(
    analysis: VideoAnalysis, size: int = DEFAULT_IMAGE_SIZE, progress: bool = False
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Crop pass: yield ``(i, crop uint8 (S, S, 3) RGB, landmarks (68, 2) float32 in crop pixels)``."""
    frames = iter_frames(analysis.path, analysis.fps)
    bar = tqdm(
        total=analysis.n_frames, desc=f"crop {analysis.path.name}", unit="frame", disable=not progress, leave=False
    )
    done = 0
    with bar:
        for i, rgb in enumerate(frames):
            if i >= analysis.n_frames:
                break
            box = analysis.boxes[i]
            yield i, crop_square(rgb, box, size), landmarks_to_crop(analysis.landmarks[i], box, size)
            done += 1
            bar.update(1)
    if done < analysis.n_frames:
        raise PreprocessError(analysis.path, f"only {done} of {analysis.n_frames} frames on the second decoding pass")


def extract_video(
    path: str | Path,
    fps: float = FPS,
    size: int = DEFAULT_IMAGE_SIZE,
    *,
    audio: bool | str | Path = True,
    detector: LandmarkDetector | None = None,
    crop: CropConfig | None = None,
    max_missing: float = DEFAULT_MAX_MISSING,
    max_av_gap_s: float = DEFAULT_MAX_AV_GAP_S,
    allow_silent: bool = False,
    face: FaceChoice = LARGEST,
    progress: bool = False,
) -> ExtractedVideo:
    """Preprocess one portrait video in memory, exactly as the dataset builder does (no files written).

    Returns:
        :class:`ExtractedVideo` with ``frames (N, size, size, 3) uint8``, ``landmarks (N, 68, 2) float32`` in
        crop pixels, ``boxes (N, 3) int32`` crop boxes ``(x0, y0, side)`` in source pixels, ``missing (N,)``
        and ``audio`` (16 kHz mono float32 aligned with frame 0, None when ``audio=False``).
    """
    analysis = analyse_video(
        path,
        fps=fps,
        detector=detector,
        crop=crop,
        audio=audio,
        max_missing=max_missing,
        max_av_gap_s=max_av_gap_s,
        allow_silent=allow_silent,
        face=face,
        image_size=size,
        progress=progress,
    )
    for message in analysis.warnings:
        log.warning(message)
    frames = np.zeros((analysis.n_frames, size, size, 3), dtype=np.uint8)
    landmarks = np.zeros((analysis.n_frames, N_LANDMARKS, 2), dtype=np.float32)
    for i, image, lms in iter_crops(analysis, size, progress):
        frames[i], landmarks[i] = image, lms
    return ExtractedVideo(frames, landmarks, analysis.boxes, analysis.missing, analysis.audio, fps, size)
