"""AD-NeRF / DiffTalk audio windowing: 50 Hz features -> 16-frame windows -> 8 stacked windows."""

from __future__ import annotations

import numpy as np

from talkingface.constants import AUDIO_WINDOW, FEATURES_PER_FRAME, SMOOTH_WINDOWS


def n_feature_frames(n_samples: int, sample_rate: int, feature_rate: float) -> int:
    """Number of feature frames covering ``n_samples`` (AD-NeRF: ``round(seconds * rate)``)."""
    return int(round(n_samples / sample_rate * feature_rate))


def frame_windows(features: np.ndarray, n_frames: int, window: int = AUDIO_WINDOW) -> np.ndarray:
    """Cut one ``window``-long slice of 50 Hz features per 25 fps video frame.

    The window of video frame ``i`` is centred on feature frame ``2 i``: it holds feature frames
    ``2i - window/2 .. 2i + window/2 - 1`` with zeros outside ``[0, len(features))`` (AD-NeRF's
    ``deepspeech_features.py``: zero-pad ``window/2`` on both sides, stride 2).

    Args:
        features: ``(M, D)`` features at 50 Hz.
        n_frames: number of video frames ``N``.
    Returns:
        ``(N, window, D)`` float32.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be (M, D), got shape {features.shape}")
    half = window // 2
    need = FEATURES_PER_FRAME * max(n_frames - 1, 0) + window
    padded = np.zeros((max(need, half + len(features)), features.shape[1]), dtype=np.float32)
    padded[half : half + len(features)] = features
    starts = FEATURES_PER_FRAME * np.arange(n_frames)
    index = starts[:, None] + np.arange(window)[None, :]
    return padded[index]


def smooth_window(windows: np.ndarray, i: int, smooth: int = SMOOTH_WINDOWS) -> np.ndarray:
    """Stack windows ``i - smooth/2 .. i + smooth/2 - 1`` for frame ``i``.

    As AD-NeRF's ``AudioAttNet`` input: the slice ``[i - smooth/2, i + smooth/2)`` is clipped to
    ``[0, N)`` and the positions that fall outside are filled with zero windows (not repeated edges).

    Returns:
        ``(smooth, window, D)`` float32.
    """
    n = len(windows)
    half = smooth // 2
    out = np.zeros((smooth,) + windows.shape[1:], dtype=np.float32)
    lo, hi = i - half, i + half
    src_lo, src_hi = max(lo, 0), min(hi, n)
    if src_hi > src_lo:
        out[src_lo - lo : src_hi - lo] = windows[src_lo:src_hi]
    return out


def smooth_windows(windows: np.ndarray, smooth: int = SMOOTH_WINDOWS) -> np.ndarray:
    """``smooth_window`` for every frame: ``(N, window, D) -> (N, smooth, window, D)``."""
    return (
        np.stack([smooth_window(windows, i, smooth) for i in range(len(windows))])
        if len(windows)
        else (np.zeros((0, smooth) + windows.shape[1:], dtype=np.float32))
    )
