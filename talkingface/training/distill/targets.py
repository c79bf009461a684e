"""The regression targets of distillation: DDIM grids that nest round after round, the closed-form noise that makes
one student step land on two teacher steps, and the differentiable DDIM chain of trajectory distillation.

Built on the samplers' own pieces (:func:`~talkingface.model.image_driven_talkingface.DiffTalk.samplers.ddim_step`,
``inpaint_replace``, ``ddim_chain``), so a student is trained on exactly the arithmetic it is sampled with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from talkingface.model.image_driven_talkingface.DiffTalk.plan import SamplerError, check_timesteps
from talkingface.model.image_driven_talkingface.DiffTalk.samplers import EpsFn, ddim_chain, ddim_step, inpaint_replace

__all__ = ["ddim_eps_target", "ddim_trajectory", "distillation_grids", "nested_timesteps", "two_step_eps_target"]


def ddim_eps_target(x_t: torch.Tensor, x_prev: torch.Tensor, a_t: torch.Tensor, a_prev: torch.Tensor) -> torch.Tensor:
    """The noise ``eps`` for which one deterministic DDIM step (``ddim_step``) from ``x_t`` at ``a_t`` lands
    exactly on ``x_prev`` at ``a_prev`` (computed in float64; requires ``a_prev > a_t``):

    ``x_prev = sqrt(a_prev / a_t) x_t + (sqrt(1 - a_prev) - sqrt(a_prev (1 - a_t) / a_t)) eps``.
    """
    x_t64, x_prev64, a_t64, a_prev64 = (v.double() for v in (x_t, x_prev, a_t, a_prev))
    scale = (a_prev64 / a_t64).sqrt()
    coef = (1.0 - a_prev64).sqrt() - (a_prev64 * (1.0 - a_t64) / a_t64).sqrt()
    return ((x_prev64 - scale * x_t64) / coef).to(x_t.dtype)


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
    every model call: the sampler's DDIM loop with ``eta=0`` (the same draws from ``generator``), but
    differentiable, so a loss on the result trains ``eps_fn`` through the whole chain (trajectory distillation)."""
    ac = alphas_cumprod.to(device=x_T.device, dtype=torch.float32)
    grid = check_timesteps(timesteps, ac.shape[0])
    return ddim_chain(eps_fn, ac, x_T, grid, 0.0, x0, mask, generator)


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
    exactly as the DDIM sampler applies it, turned into the noise for which one student DDIM step
    ``t -> end`` from ``x_t`` lands on the teacher's result (:func:`ddim_eps_target`).

    ``x_t`` must already carry the replacement at ``t`` (the sampler applies it before every model call).
    ``t``/``t_mid`` are (B,) timesteps; the alphas are scalars or (B, 1, 1, 1).
    """
    x_mid = ddim_step(x_t, eps_fn(x_t, t).to(x_t.dtype), a_t, a_mid)
    x_mid = inpaint_replace(x_mid, a_mid, x0, mask, generator)
    x_end = ddim_step(x_mid, eps_fn(x_mid, t_mid).to(x_t.dtype), a_mid, a_end)
    return ddim_eps_target(x_t, x_end, a_t, a_end)
