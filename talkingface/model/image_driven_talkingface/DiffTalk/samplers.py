"""Samplers over a noise predictor ``eps_fn(x, t) -> eps`` and the schedule's ``alphas_cumprod``.

They never see the UNet or the conditions, take a ``torch.Generator`` for every random draw, and follow the
tensors' device. Both support the masked-inpainting mode of DiffTalk: where ``mask`` is 1 the latent is
replaced, before every model call, with ``x0`` re-noised to the current step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
log = logging.getLogger(__name__)

#: The sampler names every caller accepts: ``ddim`` (reference-exact) and ``dpm++`` (DPM-Solver++ 2M).
SAMPLERS = ("ddim", "dpm++")


class SamplerError(ValueError):
    """A sampler name, step count or ``eta`` the samplers cannot take; ``option`` names which one
    (``"sampler"``, ``"steps"`` or ``"eta"``), so a command line can name its flag."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def _randn(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    gen_device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=like.dtype).to(like.device)


def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> np.ndarray:
    """latent-diffusion's uniform DDIM grid: ``range(0, T, T // S) + 1`` (e.g. 1, 101, ..., 901 for S=10)."""
    if not 0 < num_steps <= num_train_timesteps // 2:
        raise SamplerError("steps", f"DDIM takes 1..{num_train_timesteps // 2} steps, got {num_steps}")
    stride = num_train_timesteps // num_steps
    grid = np.arange(0, num_train_timesteps, stride) + 1
    if grid[-1] >= num_train_timesteps:
        raise SamplerError(
            "steps",
            f"DDIM cannot take {num_steps} steps: the reference grid (every {stride}th timestep from 1) reaches "
            f"timestep {grid[-1]}, past the last one ({num_train_timesteps - 1}); choose another step count",
        )
    return grid


def _apply_mask(
    x: torch.Tensor,
    t: int,
    x0: torch.Tensor | None,
    mask: torch.Tensor | None,
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    if mask is None:
        return x
    if x0 is None:
        raise ValueError("mask given without x0: the kept region needs the latent to keep")
    a = alphas_cumprod[t]
    kept = a.sqrt() * x0 + (1.0 - a).sqrt() * _randn(x0.shape, x0, generator)
    return kept * mask + (1.0 - mask) * x


@torch.no_grad()
def ddim_sample(
    eps_fn: EpsFn,
    alphas_cumprod: torch.Tensor,
    x_T: torch.Tensor,
    steps: int,
    eta: float = 0.0,
    x0: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM exactly as the DiffTalk reference (``ddim_ldm_ref_inpaint.py``), including its timestep grid."""
    ac = alphas_cumprod.to(device=x_T.device, dtype=torch.float32)
    grid = ddim_timesteps(steps, ac.shape[0])
    a_t_all = ac[torch.as_tensor(grid, device=ac.device)]
    a_prev_all = torch.cat([ac[:1], a_t_all[:-1]])
    # sigma in float64 as the reference computes it from the float32 alphas
    a64, ap64 = a_t_all.double(), a_prev_all.double()
    sigmas = (eta * torch.sqrt((1 - ap64) / (1 - a64) * (1 - a64 / ap64))).float()
    x = x_T
    b = x.shape[0]
    for index in tqdm(range(len(grid) - 1, -1, -1), desc="DDIM", disable=not progress, leave=False):
        step = int(grid[index])
        x = _apply_mask(x, step, x0, mask, ac, generator)
        t = torch.full((b,), step, device=x.device, dtype=torch.long)
        e_t = eps_fn(x, t).to(x.dtype)
        a_t, a_prev, sigma = a_t_all[index], a_prev_all[index], sigmas[index]
        pred_x0 = (x - (1.0 - a_t).sqrt() * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma**2).sqrt() * e_t
        x = a_prev.sqrt() * pred_x0 + dir_xt
        if eta > 0:
            x = x + sigma * _randn(x.shape, x, generator)
    return x


def dpm_solver_timesteps(num_steps: int, alphas_cumprod: torch.Tensor) -> np.ndarray:
    """Decreasing integer grid from T-1 to 0, uniform in log-SNR (lambda), so every step has about the same
    ``h`` and the multistep extrapolation stays stable; duplicates after rounding are dropped."""
    num_train = alphas_cumprod.shape[0]
    if not 0 < num_steps < num_train:
        raise SamplerError("steps", f"DPM-Solver++ takes 1..{num_train - 1} steps, got {num_steps}")
    ac = alphas_cumprod.double().cpu().numpy()
    lam = 0.5 * (np.log(ac) - np.log1p(-ac))  # increasing as t decreases
    targets = np.linspace(lam[-1], lam[0], num_steps + 1)
    grid = np.searchsorted(-lam, -targets)  # lam is decreasing in t
    grid = np.clip(grid, 0, num_train - 1)
    grid[0], grid[-1] = num_train - 1, 0
    _, first = np.unique(grid, return_index=True)
    return grid[np.sort(first)]


@torch.no_grad()
def dpm_solver_pp_sample(
    eps_fn: EpsFn,
    alphas_cumprod: torch.Tensor,
    x_T: torch.Tensor,
    steps: int,
    x0: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), data prediction, multistep second order, deterministic.

    Same noise predictor and schedule as DDIM; ends at timestep 0 like the DDIM grid does.
    """
    ac = alphas_cumprod.to(device=x_T.device, dtype=torch.float64)
    grid = dpm_solver_timesteps(steps, ac)
    alpha = ac.sqrt()
    sigma = (1.0 - ac).sqrt()
    lam = torch.log(alpha) - torch.log(sigma)
    x = x_T
    b = x.shape[0]
    prev_x0: torch.Tensor | None = None
    prev_h: float | None = None
    for i in tqdm(range(len(grid) - 1), desc="DPM-Solver++", disable=not progress, leave=False):
        s, t_next = int(grid[i]), int(grid[i + 1])
        x = _apply_mask(x, s, x0, mask, ac.float(), generator)
        t = torch.full((b,), s, device=x.device, dtype=torch.long)
        e_t = eps_fn(x, t).to(x.dtype)
        data = (x - float(sigma[s]) * e_t) / float(alpha[s])
        h = float(lam[t_next] - lam[s])
        if prev_x0 is None or prev_h is None:
            d = data
        else:
            r = prev_h / h
            d = (1.0 + 1.0 / (2.0 * r)) * data - (1.0 / (2.0 * r)) * prev_x0
        x = float(sigma[t_next] / sigma[s]) * x - float(alpha[t_next]) * math.expm1(-h) * d
        prev_x0, prev_h = data, h
    return x


def check_sampler(sampler: str, steps: int, eta: float, num_train_timesteps: int) -> None:
    """Raise :class:`SamplerError` unless ``sampler`` is one of :data:`SAMPLERS` and can take ``steps``/``eta``."""
    if sampler not in SAMPLERS:
        raise SamplerError("sampler", f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if sampler == "ddim":
        ddim_timesteps(steps, num_train_timesteps)
        return
    if not 0 < steps < num_train_timesteps:
        raise SamplerError("steps", f"DPM-Solver++ takes 1..{num_train_timesteps - 1} steps, got {steps}")
    if eta:
        raise SamplerError("eta", "the DPM-Solver++ sampler is deterministic: eta must be 0")


@torch.no_grad()
def run_sampler(
    sampler: str,
    eps_fn: EpsFn,
    alphas_cumprod: torch.Tensor,
    x_T: torch.Tensor,
    steps: int,
    eta: float = 0.0,
    x0: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """The one dispatch from a sampler name to its function (checked with :func:`check_sampler` first)."""
    check_sampler(sampler, steps, eta, alphas_cumprod.shape[0])
    if sampler == "ddim":
        return ddim_sample(eps_fn, alphas_cumprod, x_T, steps, eta, x0, mask, generator, progress)
    return dpm_solver_pp_sample(eps_fn, alphas_cumprod, x_T, steps, x0, mask, generator, progress)
