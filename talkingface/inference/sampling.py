"""Masked-inpainting sampling of a batch: DDIM or DPM-Solver++, optional bf16 autocast and torch.compile.

Autocast wraps the UNet calls only: the conditions, the sampler arithmetic and the first stage stay in float32.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch
from torch import nn

from talkingface.inference.errors import InferenceError
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkConditions, DiffTalkModel
from talkingface.model.image_driven_talkingface.DiffTalk.samplers import (
    ddim_sample,
    ddim_timesteps,
    dpm_solver_pp_sample,
)

log = logging.getLogger(__name__)

SAMPLERS = ("ddim", "dpm++")
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the UNet (None: float32). ``auto``: bf16 on a CUDA device that supports it."""
    if precision not in PRECISIONS:
        raise InferenceError("--precision", f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision == "auto":
        ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if ok else None
    return torch.bfloat16


def check_steps(sampler: str, steps: int, num_timesteps: int) -> None:
    """Fail with a message naming the option when the sampler cannot take ``steps``."""
    if sampler not in SAMPLERS:
        raise InferenceError("--sampler", f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if sampler == "dpm++":
        if not 0 < steps < num_timesteps:
            raise InferenceError("--steps", f"DPM-Solver++ takes 1..{num_timesteps - 1} steps, got {steps}")
        return
    try:
        ddim_timesteps(steps, num_timesteps)
    except ValueError as e:
        raise InferenceError("--steps", str(e)) from None


class UNetRunner:
    """Calls the model's noise predictor (optionally compiled) under autocast; returns float32 noise."""

    def __init__(self, model: DiffTalkModel, autocast_dtype: torch.dtype | None = None, compile: bool = False):
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.net: nn.Module | Callable = model.model
        if compile:
            log.info("compiling the UNet with torch.compile (the first batch is slow)")
            self.net = torch.compile(model.model, dynamic=False)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.model.device.type, dtype=self.autocast_dtype)

    def eps_fn(self, conditions: DiffTalkConditions) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with self._autocast():
                out = self.net(x, t, conditions)
            return out.float()

        return eps

    @torch.no_grad()
    def sample(
        self,
        conditions: DiffTalkConditions,
        x_T: torch.Tensor,
        x0: torch.Tensor,
        mask: torch.Tensor,
        *,
        sampler: str = "dpm++",
        steps: int = 25,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Latents where ``mask`` is 0 generated, where 1 kept from ``x0`` (re-noised at every step)."""
        ac = self.model.alphas_cumprod
        eps = self.eps_fn(conditions)
        if sampler == "ddim":
            return ddim_sample(eps, ac, x_T, steps, eta, x0, mask, generator)
        if eta:
            raise InferenceError("--eta", "the DPM-Solver++ sampler is deterministic: eta must be 0")
        return dpm_solver_pp_sample(eps, ac, x_T, steps, x0, mask, generator)
