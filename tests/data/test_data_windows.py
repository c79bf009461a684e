"""The 50 Hz -> per-frame window -> 8-window smoothing convention (AD-NeRF / DiffTalk)."""

from __future__ import annotations

import numpy as np
import pytest

from talkingface.data.constants import AUDIO_SMOOTH_SHAPE, AUDIO_WINDOW, FEATURE_DIM, SMOOTH_WINDOWS
from talkingface.media.windows import frame_windows, n_feature_frames, smooth_window, smooth_windows


def _ramp(m: int) -> np.ndarray:
    """Feature frame k holds the value k + 1 in every dimension (0 is reserved for padding)."""
    return np.repeat(np.arange(1, m + 1, dtype=np.float32)[:, None], FEATURE_DIM, axis=1)


def _adnerf_windows(features: np.ndarray) -> np.ndarray:
    """AD-NeRF's deepspeech_features.py loop, written out: pad 8 zeros each side, 16-long windows, stride 2."""
    pad = np.zeros((AUDIO_WINDOW // 2, features.shape[1]), dtype=np.float32)
    padded = np.concatenate([pad, features, pad])
    return np.stack([padded[i : i + AUDIO_WINDOW] for i in range(0, padded.shape[0] - AUDIO_WINDOW, 2)])


def _adnerf_smooth(windows: np.ndarray, i: int) -> np.ndarray:
    """AD-NeRF's run_nerf.py smoothing slice, written out (clip the slice, zero-pad what falls outside)."""
    half = SMOOTH_WINDOWS // 2
    left, right, pad_left, pad_right = i - half, i + half, 0, 0
    if left < 0:
        pad_left, left = -left, 0
    if right > len(windows):
        pad_right, right = right - len(windows), len(windows)
    win = windows[left:right]
    return np.concatenate([np.zeros_like(windows[:pad_left]), win, np.zeros_like(windows[:pad_right])])


def test_windows_centred_on_feature_2i_with_zero_padding() -> None:
    feats = _ramp(100)  # 2 s at 50 Hz -> 50 video frames
    win = frame_windows(feats, 50)
    assert win.shape == (50, AUDIO_WINDOW, FEATURE_DIM) and win.dtype == np.float32
    # start: feature frames -8..7 -> 8 zeros, then values 1..8
    np.testing.assert_array_equal(win[0, :, 0], [0] * 8 + list(range(1, 9)))
    # middle: frame 20 -> feature frames 32..47 -> values 33..48
    np.testing.assert_array_equal(win[20, :, 0], np.arange(33, 49))
    # end: frame 49 -> feature frames 90..105 -> values 91..100 then 6 zeros
    np.testing.assert_array_equal(win[49, :, 0], list(range(91, 101)) + [0] * 6)


@pytest.mark.parametrize("m", [100, 101, 37])
def test_windows_match_adnerf_loop(m: int) -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(m, FEATURE_DIM)).astype(np.float32)
    ref = _adnerf_windows(feats)
    np.testing.assert_array_equal(frame_windows(feats, len(ref)), ref)


def test_smoothing_start_middle_end_and_matches_adnerf() -> None:
    n = 12
    windows = np.arange(1, n + 1, dtype=np.float32)[:, None, None] * np.ones((1, AUDIO_WINDOW, FEATURE_DIM), np.float32)
    sm = smooth_windows(windows)
    assert sm.shape == (n,) + AUDIO_SMOOTH_SHAPE
    np.testing.assert_array_equal(sm[0, :, 0, 0], [0, 0, 0, 0, 1, 2, 3, 4])  # windows -4..3
    np.testing.assert_array_equal(sm[6, :, 0, 0], [3, 4, 5, 6, 7, 8, 9, 10])  # windows 2..9
    np.testing.assert_array_equal(sm[11, :, 0, 0], [8, 9, 10, 11, 12, 0, 0, 0])  # windows 7..14
    for i in range(n):
        np.testing.assert_array_equal(smooth_window(windows, i), _adnerf_smooth(windows, i))


def test_feature_frame_count() -> None:
    assert n_feature_frames(32000, 16000, 50) == 100
    assert n_feature_frames(38600, 16000, 50) == 121
