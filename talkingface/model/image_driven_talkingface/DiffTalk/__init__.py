"""DiffTalk (CVPR 2023): audio-driven talking-face generation with a conditional latent diffusion model.

Public API::

    from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference
    model = get_difftalk_inference()            # DiffTalkModel: EMA weights, eval mode, CUDA when available
    frames = model.inpaint(audio=..., landmarks=..., reference_latent=..., noise=model.initial_noise(b),
                           image=..., masked=..., mask=...)   # (B, 3, H, W) in [-1, 1]; dpm++ 25 steps
    # or step by step, with the reference's sampler (a SamplingPlan, checked once):
    cond = model.encode_conditions(audio, landmarks, reference, masked)
    plan = model.sampling_plan("ddim", 200)
    latents = model.sample(cond, plan, x0=model.encode_first_stage(target), mask=mask)
    frames = model.decode_first_stage(latents)

The package imports no training framework and nothing of the drivers above it. ``LatentDiffusion`` (the
Lightning module) is ``talkingface.training.module.LatentDiffusion``; importing it from here raises an
``ImportError`` that says so.
"""

from typing import Any

from .checkpoint import CheckpointError, export_safetensors, load_difftalk_checkpoint, load_first_stage
from .conditions import DiffTalkConditions
from .config import ConfigError, DiffTalkConfig, ModelConfig, load_config
from .loader import get_difftalk_inference
from .model import DiffTalkModel
from .plan import SamplerError, SamplingPlan

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DiffTalkConditions",
    "DiffTalkConfig",
    "DiffTalkModel",
    "ModelConfig",
    "SamplerError",
    "SamplingPlan",
    "export_safetensors",
    "get_difftalk_inference",
    "load_config",
    "load_difftalk_checkpoint",
    "load_first_stage",
]


def __getattr__(name: str) -> Any:
    """``LatentDiffusion`` was importable from here once: say where it lives now (the model package imports nothing
    of training, so it cannot hand it on)."""
    if name == "LatentDiffusion":
        raise ImportError(
            "LatentDiffusion (the Lightning module) lives in talkingface.training.module: "
            "from talkingface.training.module import LatentDiffusion",
            name=__name__,
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
