"""Decoding only the latent window under the paste-back region: the window geometry, the window decode and the
pipeline option. How close a window decode comes to a full decode is measured by ``benchmarks/decode_window.py``
(not exact: the VQ decoder's GroupNorm and mid-block attention are global)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import face_landmarks
from golden import SMALL_SIDE

from talkingface.inference import LipSyncOptions, LipSyncPipeline, Speech
from talkingface.inference.blend import RESIZE_SUPPORT_PX, mouth_alpha, paste_window
from talkingface.inference.video import PreparedVideo
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel

SIDE = SMALL_SIDE  # model image side of small_model (16 x 16 latents)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """This module's tests run on one thread (exact comparisons of decodes of different shapes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_paste_window_covers_the_pasted_pixels() -> None:
    alpha = mouth_alpha(face_landmarks(128), 128)
    rows, cols = np.nonzero(alpha > 0)
    y0, y1, x0, x1 = paste_window([alpha], 256, 64, margin=0)
    # alpha pixel p covers model pixels 2p..2p+1; the window (4 px a cell) holds them and the resize support
    assert y0 * 4 <= 2 * rows.min() - RESIZE_SUPPORT_PX and (y1 * 4) >= 2 * rows.max() + 2 + RESIZE_SUPPORT_PX
    assert x0 * 4 <= 2 * cols.min() - RESIZE_SUPPORT_PX and (x1 * 4) >= 2 * cols.max() + 2 + RESIZE_SUPPORT_PX
    assert (y1 - y0) * (x1 - x0) < 0.5 * 64**2  # the point: much less than the whole latent
    assert paste_window([alpha], 256, 64, margin=2) == (y0 - 2, y1 + 2, x0 - 2, x1 + 2)
    assert paste_window([alpha], 256, 64, margin=100) == (0, 64, 0, 64)
    assert paste_window([np.zeros_like(alpha)], 256, 64, margin=3) == (0, 1, 0, 1)
    shifted = np.roll(alpha, 20, axis=1)  # a batch: the union of its frames' windows
    assert paste_window([alpha, shifted], 256, 64, 0) == (y0, y1, x0, paste_window([shifted], 256, 64, 0)[3])


def test_window_decode_places_the_window_and_keeps_the_fill(small_model: DiffTalkModel) -> None:
    z = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(small_model.decode_first_stage_window(z, (0, 16, 0, 16)), small_model.decode_first_stage(z))
    fill = torch.full((2, 3, SIDE, SIDE), 0.5)
    out = small_model.decode_first_stage_window(z, (4, 12, 2, 10), fill)
    assert torch.equal(out[:, :, 16:48, 8:40], small_model.decode_first_stage(z[:, :, 4:12, 2:10]))
    outside = torch.ones_like(out, dtype=torch.bool)
    outside[:, :, 16:48, 8:40] = False
    assert (out[outside] == 0.5).all() and (fill == 0.5).all()


class Crops(PreparedVideo):
    def crop(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.frames[index], self.landmarks[index]


def test_pipeline_decode_window_option(small_model: DiffTalkModel) -> None:
    n = 3
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, SIDE, SIDE, 3), dtype=np.uint8)
    lms = np.stack([face_landmarks(SIDE)] * n)
    video = Crops(Path("v.mp4"), frames, np.tile([0, 0, SIDE], (n, 1)), lms, np.zeros(n, bool), crop_size=SIDE)
    windows = rng.standard_normal((n, 8, 16, 29)).astype(np.float32)
    silence = np.zeros(n * 640, np.float32)
    speech = Speech(Path("s.wav"), silence, windows, silence, 16_000)

    def run(**kw: object) -> np.ndarray:
        options = LipSyncOptions(steps=2, batch_size=n, precision="fp32", crop_size=SIDE, **kw)
        return np.stack(
            list(LipSyncPipeline(small_model, audio_features="mel", options=options).generate(video, speech))
        )

    full = run()
    assert not LipSyncOptions().decode_window  # approximate, so opt-in
    assert np.array_equal(run(decode_window=True, decode_margin=16), full)  # a window of the whole latent
    windowed = run(decode_window=True, decode_margin=0)
    alpha = mouth_alpha(lms[0], SIDE)
    assert np.array_equal(windowed[:, alpha == 0], frames[:, alpha == 0])  # source pixels outside the paste region
    with pytest.raises(Exception, match="--decode-margin"):
        run(decode_window=True, decode_margin=-1)
