"""Output timeline: one frame per 40 ms of speech, the source video played back and forth (ping-pong)."""

from __future__ import annotations

import numpy as np

from talkingface.constants import FPS, SAMPLE_RATE
from talkingface.media.decode import frames_for_seconds


def n_output_frames(n_samples: int, sample_rate: int = SAMPLE_RATE, fps: float = FPS) -> int:
    """Whole video frames covered by ``n_samples`` of audio (a trailing partial frame is dropped)."""
    return frames_for_seconds(n_samples / sample_rate, fps)


def pingpong_indices(n_out: int, n_video: int, start: int = 0) -> np.ndarray:
    """Source frame of each output frame: 0, 1, ..., N-1, N-2, ..., 1, 0, 1, ... (no frame shown twice in a row).

    Returns:
        ``(n_out - start,)`` int64 indices into the ``n_video`` source frames, of output frames ``start..n_out-1``.
    """
    if n_video <= 0:
        raise ValueError(f"the video needs at least one frame, got {n_video}")
    k = np.arange(start, n_out, dtype=np.int64)
    if n_video == 1:
        return np.zeros(len(k), dtype=np.int64)
    period = 2 * n_video - 2
    phase = k % period
    return np.where(phase < n_video, phase, period - phase)
