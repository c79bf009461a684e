"""DiffTalk (CVPR 2023): audio-driven talking-face generation with a conditional latent diffusion model.

Public API::

    from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference
    model = get_difftalk_inference()            # EMA weights, eval mode, CUDA when available
    cond = model.encode_conditions(audio, landmarks, reference, masked)
    latents = model.sample(cond, steps=200, x0=model.encode_first_stage(target), mask=mask)
    frames = model.decode_first_stage(latents)
"""

from .checkpoint import CheckpointError, export_safetensors, load_difftalk_checkpoint, load_first_stage
from .conditions import DiffTalkConditions
from .config import ConfigError, DiffTalkConfig, ModelConfig, load_config
from .inference import get_difftalk_inference
from .lightning_module import LatentDiffusion
from .model import DiffTalkModel

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DiffTalkConditions",
    "DiffTalkConfig",
    "DiffTalkModel",
    "LatentDiffusion",
    "ModelConfig",
    "export_safetensors",
    "get_difftalk_inference",
    "load_config",
    "load_difftalk_checkpoint",
    "load_first_stage",
]
