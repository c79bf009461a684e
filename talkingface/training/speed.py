"""Speed settings that do not change the maths: TF32, ``torch.compile`` of the UNet."""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for fp32 matmuls and convolutions (Ampere and newer GPUs; no effect on CPU).

    ``False`` leaves PyTorch's defaults alone (TF32 convolutions, full-precision matmuls).
    """
    if enabled:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")


def compile_unet(model: nn.Module) -> None:
    """Compile the UNet in place (``nn.Module.compile``): parameter names, and so checkpoints, are unchanged."""
    unet = model.model.diffusion_model
    unet.compile()
    log.info("UNet compiled with torch.compile (the first steps are slow while it compiles)")
