"""DiffTalk (CVPR 2023): audio-driven talking-face generation with a conditional latent diffusion model.

Public API::

    from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference
    model = get_difftalk_inference()            # DiffTalkModel: EMA weights, eval mode, CUDA when available
    frames = model.inpaint(audio=..., landmarks=..., reference_latent=..., noise=model.initial_noise(b),
                           image=..., masked=..., mask=..., sampler="dpm++", steps=25)   # (B, 3, H, W) in [-1, 1]
    # or step by step:
    cond = model.encode_conditions(audio, landmarks, reference, masked)
    latents = model.sample(cond, steps=200, x0=model.encode_first_stage(target), mask=mask)
    frames = model.decode_first_stage(latents)

The package imports no training framework. ``LatentDiffusion`` (the Lightning module) lives in
``talkingface.training.module``; importing it from here still works but is deprecated (it loads Lightning on
first use).
"""

import importlib
import warnings
from typing import Any

from .checkpoint import CheckpointError, export_safetensors, load_difftalk_checkpoint, load_first_stage
from .conditions import DiffTalkConditions
from .config import ConfigError, DiffTalkConfig, ModelConfig, load_config
from .loader import get_difftalk_inference
from .model import DiffTalkModel

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DiffTalkConditions",
    "DiffTalkConfig",
    "DiffTalkModel",
    "ModelConfig",
    "export_safetensors",
    "get_difftalk_inference",
    "load_config",
    "load_difftalk_checkpoint",
    "load_first_stage",
]


def __getattr__(name: str) -> Any:
    """``LatentDiffusion`` forwarded from ``talkingface.training.module`` (deprecated location, kept for Step 1's
    API); the model package does not import training at module level."""
    if name == "LatentDiffusion":
        warnings.warn(
            "import LatentDiffusion from talkingface.training.module; the DiffTalk model package no longer defines it",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module("talkingface.training.module").LatentDiffusion
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
