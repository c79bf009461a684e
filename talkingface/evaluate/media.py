"""Reading the frames to compare: a video file (decoded with PyAV) or a directory of images."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkingface.constants import FPS
from talkingface.evaluate.errors import EvaluationError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders ``frame2.png`` before ``frame10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_images(directory: Path) -> list[Path]:
    """Image files directly inside ``directory``, sorted naturally."""
    files = [p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


def read_image(path: Path) -> np.ndarray:
    """An image file as RGB uint8 ``(H, W, 3)``."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise EvaluationError(path, "cannot be read as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_video(path: Path) -> tuple[list[np.ndarray], float | None]:
    """All frames of the first video stream (presentation order, no resampling) and its frame rate."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise EvaluationError(path, f"cannot open as a video ({e})") from e
    with container:
        if not container.streams.video:
            raise EvaluationError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        try:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        except av.error.FFmpegError as e:
            raise EvaluationError(path, f"video decoding failed ({e})") from e
    return frames, (float(rate) if rate else None)


@dataclass
class FrameSequence:
    """Frames of one input, RGB uint8 ``(H, W, 3)`` each, with where they came from."""

    source: Path
    frames: list[np.ndarray]
    fps: float | None = None

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the first frame."""
        return self.frames[0].shape[:2]


def load_frames(path: str | Path) -> FrameSequence:
    """Load a video file or a directory of jpg/png frames (naturally sorted) as RGB uint8 frames.

    Raises:
        EvaluationError: naming the path when it does not exist, holds no frames or cannot be decoded.
    """
    path = Path(path)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise EvaluationError(path, f"directory holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        frames = [read_image(f) for f in files]
        fps = None
    elif path.is_file():
        frames, fps = read_video(path)
        if not frames:
            raise EvaluationError(path, "the video stream has no decodable frames")
    else:
        raise EvaluationError(path, "no such file or directory")
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise EvaluationError(path, f"frames differ in size: {sorted(shapes)}")
    log.info("%s: %d frames of %dx%d", path, len(frames), frames[0].shape[1], frames[0].shape[0])
    return FrameSequence(path, frames, fps)


@dataclass
class AlignedFrames:
    """Predicted and ground-truth frames of equal count and size, plus what had to be done to get there."""

    pred: list[np.ndarray]
    gt: list[np.ndarray]
    notes: list[str]
    pred_index: np.ndarray  # (n,) int64: the pred source frame shown as evaluated frame k
    gt_index: np.ndarray  # (n,) int64: the gt source frame shown as evaluated frame k
    fps: float | None = None  # the rate of the evaluated frames (None: neither input has one)


def _time_map(seq: FrameSequence, fps: float) -> np.ndarray:
    """Source frame of ``seq`` for each frame at ``fps`` (the rule of :func:`talkingface.media.decode.map_frames`)."""
    from talkingface.media.decode import map_frames
    from talkingface.media.errors import PreprocessError

    try:
        source = map_frames(seq.source, fps).source
    except PreprocessError as e:
        raise EvaluationError(seq.source, f"cannot resample to {fps:g} fps ({e})") from e
    return np.minimum(source, len(seq) - 1)


def align(pred: FrameSequence, gt: FrameSequence) -> AlignedFrames:
    """Align ``pred`` and ``gt`` by time, truncate to the shorter sequence and resize ``pred`` to ``gt``'s size.

    Videos at different frame rates are both resampled to the pipeline's 25 fps (:data:`~talkingface.constants.FPS`,
    the rate SyncNet expects) with the frame-rate rule of :func:`talkingface.media.decode.iter_frames` (frame
    ``k`` shows the source frame on screen at ``k / 25`` s). A frame directory has no rate; it is taken to run at the
    other input's. Every change is noted (and warned).
    """
    import cv2

    notes: list[str] = []
    pred_index = np.arange(len(pred), dtype=np.int64)
    gt_index = np.arange(len(gt), dtype=np.int64)
    fps = gt.fps or pred.fps
    if pred.fps and gt.fps and abs(pred.fps - gt.fps) > 0.01:
        fps = float(FPS)
        changed = []
        if abs(pred.fps - fps) > 0.01:
            pred_index = _time_map(pred, fps)
            changed.append(f"pred {len(pred)} -> {len(pred_index)} frames")
        if abs(gt.fps - fps) > 0.01:
            gt_index = _time_map(gt, fps)
            changed.append(f"gt {len(gt)} -> {len(gt_index)} frames")
        notes.append(
            f"frame rates differ (pred {pred.fps:g} fps, gt {gt.fps:g} fps): both compared at {fps:g} fps, "
            f"resampled by time ({', '.join(changed)})"
        )
    elif bool(pred.fps) != bool(gt.fps):
        known, missing = ("pred", "gt") if pred.fps else ("gt", "pred")
        notes.append(f"{missing} has no frame rate (frame directory): taken to run at {known}'s {fps:g} fps")
    n = min(len(pred_index), len(gt_index))
    if len(pred_index) != len(gt_index):
        notes.append(f"frame counts differ (pred {len(pred_index)}, gt {len(gt_index)}): evaluated the first {n}")
    pred_index, gt_index = pred_index[:n], gt_index[:n]
    pred_frames = [pred.frames[i] for i in pred_index]
    (gh, gw), (ph, pw) = gt.size, pred.size
    if (gh, gw) != (ph, pw):
        interp = cv2.INTER_AREA if ph * pw > gh * gw else cv2.INTER_CUBIC
        pred_frames = [cv2.resize(f, (gw, gh), interpolation=interp) for f in pred_frames]
        notes.append(f"pred frames resized from {pw}x{ph} to gt's {gw}x{gh}")
    for note in notes:
        log.warning(note)
    return AlignedFrames(pred_frames, [gt.frames[i] for i in gt_index], notes, pred_index, gt_index, fps)
