"""Samplers over a noise predictor ``eps_fn(x, t) -> eps`` and the schedule's ``alphas_cumprod``.

They never see the UNet or the conditions, take a ``torch.Generator`` for every random draw, and follow the
tensors' device. Both support the masked-inpainting mode of DiffTalk: where ``mask`` is 1 the latent is
replaced, before every model call, with ``x0`` re-noised to the current step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from talkingface.errors import TalkingFaceError

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
log = logging.getLogger(__name__)

#: The sampler names every caller accepts: ``ddim`` (reference-exact) and ``dpm++`` (DPM-Solver++ 2M).
SAMPLERS = ("ddim", "dpm++")


class SamplerError(TalkingFaceError, ValueError):
    """A sampler name, step count or ``eta`` the samplers cannot take; ``option`` names which one
    (``"sampler"``, ``"steps"`` or ``"eta"``), so a command line can name its flag."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(None, message)
        self.args = (option, message)
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


def check_timesteps(timesteps: Sequence[int], num_train_timesteps: int = 1000) -> np.ndarray:
    """An explicit DDIM grid (e.g. a distilled student's, recorded in its checkpoint) as an increasing int array;
    raises :class:`SamplerError` unless it is strictly increasing inside ``0 .. T - 1``."""
    grid = np.asarray(list(timesteps), dtype=np.int64)
    if grid.ndim != 1 or len(grid) == 0:
        raise SamplerError("steps", "explicit DDIM timesteps must be a non-empty list of integers")
    if grid[0] < 0 or grid[-1] >= num_train_timesteps or np.any(np.diff(grid) <= 0):
        raise SamplerError(
            "steps", f"explicit DDIM timesteps must increase strictly within 0..{num_train_timesteps - 1}: {grid}"
        )
    return grid


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


def ddim_eps_target(x_t: torch.Tensor, x_prev: torch.Tensor, a_t: torch.Tensor, a_prev: torch.Tensor) -> torch.Tensor:
    """The noise ``eps`` for which one deterministic DDIM step (:func:`ddim_step`) from ``x_t`` at ``a_t`` lands
    exactly on ``x_prev`` at ``a_prev`` (computed in float64; requires ``a_prev > a_t``):

    ``x_prev = sqrt(a_prev / a_t) x_t + (sqrt(1 - a_prev) - sqrt(a_prev (1 - a_t) / a_t)) eps``.
    """
    x_t64, x_prev64, a_t64, a_prev64 = (v.double() for v in (x_t, x_prev, a_t, a_prev))
    scale = (a_prev64 / a_t64).sqrt()
    coef = (1.0 - a_prev64).sqrt() - (a_prev64 * (1.0 - a_t64) / a_t64).sqrt()
    return ((x_prev64 - scale * x_t64) / coef).to(x_t.dtype)


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
    steps: int,
    eta: float = 0.0,
    x0: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    timesteps: Sequence[int] | None = None,
) -> torch.Tensor:
    """DDIM exactly as the DiffTalk reference (``ddim_ldm_ref_inpaint.py``), including its timestep grid.

    ``timesteps``: an explicit increasing grid of ``steps`` timesteps instead of the reference's uniform one (a
    progressive-distilled student's, :func:`nested_timesteps`); each step goes to the previous grid entry, the
    first one to ``alphas_cumprod[0]``, as on the uniform grid.
    """
    ac = alphas_cumprod.to(device=x_T.device, dtype=torch.float32)
    if timesteps is None:
        grid = ddim_timesteps(steps, ac.shape[0])
    else:
        grid = check_timesteps(timesteps, ac.shape[0])
    return _ddim_chain(eps_fn, ac, x_T, grid, eta, x0, mask, generator, progress)


def _ddim_chain(
    eps_fn: EpsFn,
    ac: torch.Tensor,
    x_T: torch.Tensor,
    grid: np.ndarray,
    eta: float,
    x0: torch.Tensor | None,
    mask: torch.Tensor | None,
    generator: torch.Generator | None,
    progress: bool,
) -> torch.Tensor:
    """The DDIM loop of :func:`ddim_sample` and :func:`ddim_trajectory` (gradient as the caller's mode allows)."""
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


def ddim_trajectory(
    eps_fn: EpsFn,
    alphas_cumprod: torch.Tensor,
    x_T: torch.Tensor,
    timesteps: Sequence[int],
    x0: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Deterministic DDIM over the explicit increasing grid ``timesteps``, with the inpainting replacement before
    every model call: :func:`ddim_sample`'s loop with ``eta=0`` (the same draws from ``generator``), but
    differentiable, so a loss on the result trains ``eps_fn`` through the whole chain (trajectory distillation)."""
    ac = alphas_cumprod.to(device=x_T.device, dtype=torch.float32)
    grid = check_timesteps(timesteps, ac.shape[0])
    return _ddim_chain(eps_fn, ac, x_T, grid, 0.0, x0, mask, generator, progress=False)


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


def check_sampler(
    sampler: str, steps: int, eta: float, num_train_timesteps: int, timesteps: Sequence[int] | None = None
) -> None:
    """Raise :class:`SamplerError` unless ``sampler`` is one of :data:`SAMPLERS` and can take ``steps``/``eta``
    (and ``timesteps``, an explicit DDIM grid of ``steps`` entries)."""
    if sampler not in SAMPLERS:
        raise SamplerError("sampler", f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if timesteps is not None:
        if sampler != "ddim":
            raise SamplerError("sampler", f"explicit timesteps are a DDIM grid; the {sampler} sampler takes none")
        if len(check_timesteps(timesteps, num_train_timesteps)) != steps:
            raise SamplerError("steps", f"{steps} steps asked for with a grid of {len(list(timesteps))} timesteps")
        return
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
    timesteps: Sequence[int] | None = None,
) -> torch.Tensor:
    """The one dispatch from a sampler name to its function (checked with :func:`check_sampler` first).
    ``timesteps``: an explicit DDIM grid (DDIM only)."""
    check_sampler(sampler, steps, eta, alphas_cumprod.shape[0], timesteps)
    if sampler == "ddim":
        return ddim_sample(eps_fn, alphas_cumprod, x_T, steps, eta, x0, mask, generator, progress, timesteps)
    return dpm_solver_pp_sample(eps_fn, alphas_cumprod, x_T, steps, x0, mask, generator, progress)


def nested_timesteps(grid: Sequence[int]) -> np.ndarray:
    """The grid of a progressive-distillation student: every other timestep of its teacher's increasing DDIM
    ``grid`` (``grid[1::2]``), so each student step ``grid[2j+1] -> grid[2j-1]`` (the last one to
    ``alphas_cumprod[0]``) spans exactly two teacher steps. The uniform DDIM grids of N and N/2 steps are not
    nested (``ddim_timesteps(8)`` starts 1, 126, ...; ``ddim_timesteps(16)`` 1, 63, 125, ...), hence this."""
    grid = np.asarray(list(grid), dtype=np.int64)
    if len(grid) < 2 or len(grid) % 2:
        raise SamplerError("steps", f"a teacher grid must have an even number of timesteps to halve, got {len(grid)}")
    return grid[1::2]


def distillation_grids(
    teacher_steps: int,
    student_steps: int,
    num_train_timesteps: int = 1000,
    teacher_grid: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """The DDIM grids of a progressive distillation from ``teacher_steps`` down to ``student_steps``, halving each
    round: ``[teacher grid, round-1 student grid, ..., final student grid]``. The first teacher's grid is
    ``teacher_grid`` when given (a distilled student's own recorded grid, distilled further), else
    ``k * T // teacher_steps + 1`` for k < teacher_steps: the reference's uniform grid when ``teacher_steps``
    divides T, and exactly ``teacher_steps`` timesteps otherwise too (the reference's grid of "16" steps has 17)."""
    if student_steps < 1 or teacher_steps <= student_steps:
        raise SamplerError("steps", f"need teacher steps > student steps >= 1, got {teacher_steps} -> {student_steps}")
    ratio = teacher_steps // student_steps
    if teacher_steps % student_steps or ratio & (ratio - 1):
        raise SamplerError(
            "steps", f"teacher steps / student steps must be a power of 2, got {teacher_steps} / {student_steps}"
        )
    if teacher_steps > num_train_timesteps // 2:
        raise SamplerError("steps", f"DDIM takes 1..{num_train_timesteps // 2} steps, got {teacher_steps}")
    if teacher_grid is not None:
        first = np.asarray(list(teacher_grid), dtype=np.int64)
        in_range = len(first) > 0 and first[0] >= 0 and first[-1] < num_train_timesteps
        if len(first) != teacher_steps or np.any(np.diff(first) <= 0) or not in_range:
            raise SamplerError(
                "steps",
                f"the teacher's grid {first.tolist()} is not {teacher_steps} increasing timesteps in "
                f"[0, {num_train_timesteps})",
            )
        grids = [first]
    else:
        grids = [np.arange(teacher_steps, dtype=np.int64) * num_train_timesteps // teacher_steps + 1]
    while len(grids[-1]) > student_steps:
        grids.append(nested_timesteps(grids[-1]))
    return grids


@torch.no_grad()
def two_step_eps_target(
    eps_fn: EpsFn,
    x_t: torch.Tensor,
    t: torch.Tensor,
    t_mid: torch.Tensor,
    a_t: torch.Tensor,
    a_mid: torch.Tensor,
    a_end: torch.Tensor,
    x0: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Progressive distillation's target: two deterministic DDIM steps of the teacher ``eps_fn``,
    ``t -> t_mid -> end`` (``alpha_bar`` ``a_t -> a_mid -> a_end``), with the inpainting replacement at ``t_mid``
    exactly as :func:`ddim_sample` applies it, turned into the noise for which one student DDIM step
    ``t -> end`` from ``x_t`` lands on the teacher's result (:func:`ddim_eps_target`).

    ``x_t`` must already carry the replacement at ``t`` (the sampler applies it before every model call).
    ``t``/``t_mid`` are (B,) timesteps; the alphas are scalars or (B, 1, 1, 1).
    """
    x_mid = ddim_step(x_t, eps_fn(x_t, t).to(x_t.dtype), a_t, a_mid)
    x_mid = inpaint_replace(x_mid, a_mid, x0, mask, generator)
    x_end = ddim_step(x_mid, eps_fn(x_mid, t_mid).to(x_t.dtype), a_mid, a_end)
    return ddim_eps_target(x_t, x_end, a_t, a_end)
