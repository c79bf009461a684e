"""Samplers over a noise predictor ``eps_fn(x, t) -> eps`` and the schedule's ``alphas_cumprod``.

Every sampler has one signature, ``sampler(eps_fn, alphas_cumprod, x_T, plan, x0, mask, generator, progress)``,
and walks the grid of a :class:`~.plan.SamplingPlan` built and checked outside it (:func:`~.plan.make_plan`,
:func:`~.plan.resolve_plan`). They never see the UNet or the conditions, take a ``torch.Generator`` for every random
draw, and follow the tensors' device. Both support the masked-inpainting mode of DiffTalk: where ``mask`` is 1 the
latent is replaced, before every model call, with ``x0`` re-noised to the current step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .plan import DDIM, DPM_SOLVER_PP, SAMPLERS, SamplerError, SamplingPlan

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
log = logging.getLogger(__name__)

__all__ = [
    "SAMPLERS",
    "EpsFn",
    "SamplerError",
    "ddim_alphas",
    "ddim_chain",
    "ddim_sample",
    "ddim_step",
    "dpm_solver_pp_sample",
    "inpaint_replace",
    "run_sampler",
]


def _randn(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    gen_device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=like.dtype).to(like.device)


def ddim_alphas(alphas_cumprod: torch.Tensor, grid: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``alpha_bar`` at each grid timestep and at the step it goes to (the previous grid entry; for the first
    one ``alphas_cumprod[0]``, as the reference DDIM)."""
    a_t = alphas_cumprod[torch.as_tensor(grid, device=alphas_cumprod.device)]
    return a_t, torch.cat([alphas_cumprod[:1], a_t[:-1]])


def ddim_step(
    x: torch.Tensor, e_t: torch.Tensor, a_t: torch.Tensor, a_prev: torch.Tensor, sigma: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """One deterministic DDIM update from ``alpha_bar = a_t`` to ``a_prev`` (the noise term of ``eta > 0`` is the
    caller's). ``a_t``/``a_prev`` are scalars or per-sample tensors broadcasting over ``x``."""
    pred_x0 = (x - (1.0 - a_t).sqrt() * e_t) / a_t.sqrt()
    dir_xt = (1.0 - a_prev - sigma**2).sqrt() * e_t
    return a_prev.sqrt() * pred_x0 + dir_xt


def inpaint_replace(
    x: torch.Tensor,
    a_t: torch.Tensor,
    x0: torch.Tensor | None,
    mask: torch.Tensor | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DiffTalk's masked inpainting: where ``mask`` is 1, ``x`` becomes ``x0`` re-noised to ``alpha_bar = a_t``
    (fresh noise from ``generator``); where it is 0, ``x`` is kept. ``a_t`` is a scalar or per-sample tensor."""
    if mask is None:
        return x
    if x0 is None:
        raise ValueError("mask given without x0: the kept region needs the latent to keep")
    kept = a_t.sqrt() * x0 + (1.0 - a_t).sqrt() * _randn(x0.shape, x0, generator)
    return kept * mask + (1.0 - mask) * x


def _apply_mask(
    x: torch.Tensor,
    t: int,
    x0: torch.Tensor | None,
    mask: torch.Tensor | None,
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    return inpaint_replace(x, alphas_cumprod[t], x0, mask, generator)


@torch.no_grad()
def ddim_sample(
    eps_fn: EpsFn,
    alphas_cumprod: torch.Tensor,
    x_T: torch.Tensor,
    plan: SamplingPlan,
    x0: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM exactly as the DiffTalk reference (``ddim_ldm_ref_inpaint.py``) over ``plan``'s increasing grid: the
    reference's uniform one, or an explicit one (a distilled student's); each step goes to the previous grid entry,
    the first one to ``alphas_cumprod[0]``. ``plan.eta`` > 0 adds the reference's noise term."""
    plan.check_schedule(alphas_cumprod)
    ac = alphas_cumprod.to(device=x_T.device, dtype=torch.float32)
    return ddim_chain(eps_fn, ac, x_T, plan.grid(), plan.eta, x0, mask, generator, progress)


def ddim_chain(
    eps_fn: EpsFn,
    alphas_cumprod: torch.Tensor,
    x_T: torch.Tensor,
    grid: np.ndarray,
    eta: float = 0.0,
    x0: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """The DDIM loop over the checked increasing ``grid`` (float32 ``alphas_cumprod`` on ``x_T``'s device), with
    gradients as the caller's mode allows: :func:`ddim_sample` runs it without, trajectory distillation
    (``talkingface.training.distill``) through the whole chain."""
    ac = alphas_cumprod
    a_t_all, a_prev_all = ddim_alphas(ac, grid)
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
        x = ddim_step(x, e_t, a_t_all[index], a_prev_all[index], sigmas[index])
        if eta > 0:
            x = x + sigmas[index] * _randn(x.shape, x, generator)
    return x


@torch.no_grad()
def dpm_solver_pp_sample(
    eps_fn: EpsFn,
    alphas_cumprod: torch.Tensor,
    x_T: torch.Tensor,
    plan: SamplingPlan,
    x0: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), data prediction, multistep second order, deterministic, over ``plan``'s
    decreasing log-SNR-uniform grid (:func:`~.plan.dpm_solver_timesteps`).

    Same noise predictor and schedule as DDIM; ends at timestep 0 like the DDIM grid does.
    """
    plan.check_schedule(alphas_cumprod)
    ac = alphas_cumprod.to(device=x_T.device, dtype=torch.float64)
    grid = plan.grid()
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


#: Each sampler by name; all take ``(eps_fn, alphas_cumprod, x_T, plan, x0, mask, generator, progress)``.
SAMPLER_FUNCTIONS = {DDIM: ddim_sample, DPM_SOLVER_PP: dpm_solver_pp_sample}


@torch.no_grad()
def run_sampler(
    plan: SamplingPlan,
    eps_fn: EpsFn,
    alphas_cumprod: torch.Tensor,
    x_T: torch.Tensor,
    x0: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Sample with ``plan``'s sampler (the one dispatch from a sampler name to its function)."""
    sample = SAMPLER_FUNCTIONS.get(plan.sampler)
    if sample is None:
        raise SamplerError("sampler", f"unknown sampler {plan.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return sample(eps_fn, alphas_cumprod, x_T, plan, x0, mask, generator, progress)
