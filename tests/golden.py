"""Helpers for the conformance tests: the reference's deterministic weight rule and golden fixture loading."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import torch
from torch import nn

from talkingface.model.image_driven_talkingface.DiffTalk.schedule import SCHEDULE_BUFFERS

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOLDEN = FIXTURES / "golden_tiny.pt"
TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "latent-diffusion" / "talking-tiny.yaml"
#: Model image side of the small model (16 x 16 latents): a quarter of the tiny config's side, for tests whose subject
#: is not the model (threads, windows, compile, benchmark scripts), where the tiny model's 256 px first stage dominates.
SMALL_SIDE = 64
#: Overrides on :data:`TINY_CONFIG` for the small model.
SMALL_OVERRIDES = [
    f"model.first_stage.resolution={SMALL_SIDE}",
    f"model.unet.image_size={SMALL_SIDE // 4}",
    "model.unet.channel_mult=[1,2]",
    "model.unet.attention_resolutions=[2]",
    "model.unet.num_res_blocks=1",
    "model.first_stage.num_res_blocks=1",
]


def rule_tensor(name: str, shape: torch.Size) -> torch.Tensor:
    """The fill rule of the reference fixtures (reference data README, section 'Deterministic weights')."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    if len(shape) >= 2:
        return torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    if name.endswith("weight"):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    return 0.02 * torch.randn(shape, generator=g)


def fill_deterministic(model: nn.Module) -> None:
    """Fill every floating entry of ``model.state_dict()`` by the reference rule, EMA copies included."""
    sd = model.state_dict()
    ema_names = {}
    if getattr(model, "use_ema", False):
        ema_names = {s: "ema:model." + p for p, s in model.model_ema.m_name2s_name.items()}
    new = {}
    for k, v in sd.items():
        if not v.is_floating_point() or k in SCHEDULE_BUFFERS or k in ("model_ema.decay", "model_ema.num_updates"):
            continue
        if k.startswith("model_ema."):
            new[k] = rule_tensor(ema_names[k[len("model_ema.") :]], v.shape)
        else:
            new[k] = rule_tensor(k, v.shape)
    model.load_state_dict(new, strict=False)  # partial by design: schedule buffers keep their computed values


def load_golden() -> dict:
    return torch.load(GOLDEN, map_location="cpu", weights_only=True)
