"""The fast training path, checked on CPU: a compiled training step matches an eager one, and bf16 autocast stays
finite over 100 optimizer steps. (The latent cache's identical losses: ``test_train_latent_cache.py``; the GPU
figures: ``benchmarks/device_check.py``.)

Both use the tiny config at 64 px (16 x 16 latents, the tests' small variant) so that they run in seconds.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from golden import TINY_CONFIG, fill_deterministic

from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkConditions, DiffTalkModel, load_config
from talkingface.training.speed import compile_unet

SMALL = [
    "model.first_stage.resolution=64",
    "model.unet.image_size=16",
    "model.unet.channel_mult=[1,2]",
    "model.unet.attention_resolutions=[2]",
    "model.unet.num_res_blocks=1",
    "model.first_stage.num_res_blocks=1",
]
#: torch.compile of the UNet on CPU takes over a minute (see tests/test_device_check.py), too slow for every run.
COMPILE_ENV = "TALKINGFACE_TEST_COMPILE"


def small_model() -> DiffTalkModel:
    torch.set_num_threads(1)
    model = DiffTalkModel(load_config(TINY_CONFIG, SMALL).model)
    fill_deterministic(model)
    return model


def batch(model: DiffTalkModel, n: int, seed: int) -> tuple[torch.Tensor, DiffTalkConditions]:
    """Latents and conditions of a random batch (latents as from the latent cache: no first stage in the loop)."""
    g = torch.Generator().manual_seed(seed)
    h, ccfg = model.image_size, model.config.conditioning
    z = torch.randn(n, model.channels, h, h, generator=g)
    cond = DiffTalkConditions(
        audio=model.encode_audio(torch.randn(n, ccfg.audio_smooth_windows, ccfg.audio_window, 29, generator=g)),
        landmarks=model.encode_landmarks(torch.rand(n, ccfg.landmark_count, 2, generator=g) * 64),
        reference=torch.randn(n, model.channels, h, h, generator=g),
        masked=torch.randn(n, model.channels, h, h, generator=g),
    )
    return z, cond


@pytest.mark.skipif(
    os.environ.get(COMPILE_ENV) != "1",
    reason=f"torch.compile on CPU takes over a minute; set {COMPILE_ENV}=1 to run it",
)
def test_compiled_training_step_matches_eager() -> None:
    eager = small_model()
    compiled = copy.deepcopy(eager)
    compile_unet(compiled)
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints unchanged by compiling
    t = torch.tensor([10, 700])
    noise = torch.randn(2, eager.channels, 16, 16, generator=torch.Generator().manual_seed(3))
    losses, grads = [], []
    for model in (eager, compiled):
        z, cond = batch(model, 2, seed=1)
        loss, _ = model.training_loss(z, cond, t=t, noise=noise)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.model.parameters()]))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_bf16_autocast_stays_finite_over_100_steps() -> None:
    model = small_model().train()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(5)
    for step in range(100):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z, cond = batch(model, 2, seed=step % 4)
            t = torch.randint(0, model.num_timesteps, (2,), generator=g)
            loss, _ = model.training_loss(z, cond, t=t, noise=torch.randn(z.shape, generator=g))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        assert torch.isfinite(loss), f"step {step}: loss {loss.item()}"
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.trainable_parameters())
    assert loss.dtype == torch.float32
