"""Reading the frames to compare: a video file (decoded with PyAV) or a directory of images."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


def align(pred: FrameSequence, gt: FrameSequence) -> AlignedFrames:
    """Truncate to the shorter sequence and resize ``pred`` to ``gt``'s size when they differ (with warnings)."""
    import cv2

    notes: list[str] = []
    n = min(len(pred), len(gt))
    if len(pred) != len(gt):
        notes.append(f"frame counts differ (pred {len(pred)}, gt {len(gt)}): evaluated the first {n}")
    pred_frames = pred.frames[:n]
    (gh, gw), (ph, pw) = gt.size, pred.size
    if (gh, gw) != (ph, pw):
        interp = cv2.INTER_AREA if ph * pw > gh * gw else cv2.INTER_CUBIC
        pred_frames = [cv2.resize(f, (gw, gh), interpolation=interp) for f in pred_frames]
        notes.append(f"pred frames resized from {pw}x{ph} to gt's {gw}x{gh}")
    for note in notes:
        log.warning(note)
    return AlignedFrames(pred_frames, gt.frames[:n], notes)
