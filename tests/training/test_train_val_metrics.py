"""Validation image metrics (issue: evaluation during training): sampled frames scored against the targets."""

from __future__ import annotations

import math

import pytest
import torch
from golden import TINY_CONFIG, fill_deterministic

from talkingface.model.image_driven_talkingface.DiffTalk import load_config
from talkingface.training.module import LatentDiffusion


def fake_batch(b: int = 2, size: int = 256) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    landmarks = torch.rand(b, 39, 2, generator=g) * size
    landmarks[:, 21, 1] = torch.tensor([140.0, 200.0])[:b]  # nose tip rows
    return {
        "image": torch.rand(b, size, size, 3, generator=g) * 2 - 1,
        "reference_img": torch.rand(b, size, size, 3, generator=g) * 2 - 1,
        "image_mask": torch.rand(b, size, size, 3, generator=g) * 2 - 1,
        "landmarks": landmarks,
        "audio_smooth": torch.randn(b, 8, 16, 29, generator=g),
    }


@pytest.mark.slow
def test_sample_metrics_keys_values_and_determinism() -> None:
    model = LatentDiffusion(load_config(TINY_CONFIG).model, val_metrics_steps=2).eval()
    fill_deterministic(model)
    batch = fake_batch()
    a = model.sample_metrics(batch, batch_idx=0)
    b = model.sample_metrics(batch, batch_idx=0)
    assert set(a) == {"psnr", "ssim", "region_psnr", "region_ssim"}
    assert all(math.isfinite(v) for v in a.values()) and a == b
    assert 0 < a["psnr"] < 40 and -1 <= a["ssim"] <= 1


@pytest.mark.slow
def test_sample_metrics_region_follows_the_nose_tip() -> None:
    """A prediction equal to the target below the nose tip gives infinite region PSNR there only."""
    model = LatentDiffusion(load_config(TINY_CONFIG).model, val_metrics_steps=1).eval()
    fill_deterministic(model)
    batch = fake_batch(b=1)
    with torch.no_grad():
        target = model._images(batch, "image")
    model.decode_first_stage = lambda latents: target.clone()  # "perfect" generator
    m = model.sample_metrics(batch)
    assert m["psnr"] == float("inf") and m["region_psnr"] == float("inf")
    original = target.clone()
    target[:, :, :130, :] = 0.0  # the prediction now differs above the nose tip (row 140) only
    m = model.sample_metrics(batch)
    assert math.isfinite(m["psnr"]) and m["region_psnr"] == float("inf")  # the region starts at the nose tip
    target.copy_(original)
    target[:, :, 150:, :] = 0.0  # and now below it
    m = model.sample_metrics(batch)
    assert math.isfinite(m["region_psnr"]) and math.isfinite(m["psnr"])
