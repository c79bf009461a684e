"""Mixed precision: bf16 autocast trains and samples; the VQ codebook lookup stays float32."""

from __future__ import annotations

import pytest
import torch

from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel


@pytest.mark.slow
def test_bf16_autocast_training_step_and_sampling(fresh_tiny_model: DiffTalkModel) -> None:
    model = fresh_tiny_model  # trained a step: its own copy
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 256, 256, generator=g) * 2 - 1
    audio, landmarks = torch.randn(2, 8, 16, 29, generator=g), torch.rand(2, 39, 2, generator=g) * 256
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = model.encode_first_stage(images)
        cond = model.encode_conditions(audio, landmarks, images, images)
        loss, _ = model.training_loss(z, cond)
    loss.backward()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in model.model.parameters() if p.grad is not None)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        latents = model.sample(cond, model.sampling_plan("dpm++", 3), generator=torch.Generator().manual_seed(1))
    assert latents.dtype == torch.float32 and torch.isfinite(latents).all()


def test_codebook_lookup_ignores_autocast(tiny_model: DiffTalkModel) -> None:
    z = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    vq = tiny_model.first_stage_model.quantize
    with torch.no_grad():
        exact = vq.indices(z)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = vq.indices(z)
    assert torch.equal(exact, mixed)
