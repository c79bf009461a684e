"""What a sampler walks: a :class:`SamplingPlan` (sampler, steps, timestep grid, eta), resolved and checked once.

The plan is built outside the sampling loop, from the user's choice, a checkpoint's record (a distilled student's
:class:`~.config.SamplingSetting`) or the defaults below, on the model's noise schedule; the samplers in
:mod:`.samplers` take it as it is and check nothing but that it was made for their schedule.

Every default step count of the package is one named constant in :mod:`talkingface.constants`, imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from talkingface.constants import (
    DDIM,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    DEMO_STEPS,
    DPM_SOLVER_PP,
    IMAGE_LOG_DDIM_STEPS,
    REFERENCE_DDIM_STEPS,
    VALIDATION_STEPS,
)
from talkingface.errors import TalkingFaceError

if TYPE_CHECKING:
    from .config import SamplingSetting

__all__ = [
    "DDIM",
    "DEFAULT_SAMPLER",
    "DEFAULT_STEPS",
    "DEMO_STEPS",
    "DPM_SOLVER_PP",
    "IMAGE_LOG_DDIM_STEPS",
    "RECORDED",
    "REFERENCE_DDIM_STEPS",
    "SAMPLERS",
    "VALIDATION_STEPS",
    "SamplerError",
    "SamplingPlan",
    "check_timesteps",
    "ddim_timesteps",
    "dpm_solver_timesteps",
    "make_plan",
    "resolve_plan",
]

SAMPLERS = (DDIM, DPM_SOLVER_PP)


#: :attr:`SamplerError.option` of a checkpoint's recorded sampler that cannot be used: the checkpoint is to blame.
RECORDED = "recorded"


class SamplerError(TalkingFaceError, ValueError):
    """A sampler name, step count or ``eta`` the samplers cannot take; ``option`` names which one
    (``"sampler"``, ``"steps"`` or ``"eta"``, or :data:`RECORDED` when the value came from a checkpoint's record),
    so a command line can name its flag, or the checkpoint."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(None, message)
        self.args = (option, message)
        self.option = option


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


@dataclass(frozen=True)
class SamplingPlan:
    """A checked sampling plan: what :func:`~.samplers.run_sampler` walks, step by step.

    ``timesteps``: the grid, built once for a schedule of ``num_train_timesteps`` steps; for DDIM the increasing
    grid of ``steps`` timesteps (each step goes to the previous entry, the first one to ``alphas_cumprod[0]``),
    for DPM-Solver++ the decreasing grid of its evaluation points, from ``T - 1`` down to 0. ``explicit``: the
    grid was given (a distilled student's recorded one, or the caller's), not built from ``steps``. Make one with
    :func:`make_plan` or :func:`resolve_plan`.
    """

    sampler: str
    steps: int
    timesteps: tuple[int, ...]
    eta: float = 0.0
    num_train_timesteps: int = 1000
    explicit: bool = False

    def describe(self) -> str:
        """E.g. ``dpm++ 25 steps`` or ``ddim 4 steps (timesteps [188, 438, 688, 938])``."""
        text = f"{self.sampler} {self.steps} steps"
        if self.explicit:
            text += f" (timesteps {list(self.timesteps)})"
        if self.eta:
            text += f", eta {self.eta:g}"
        return text

    def grid(self) -> np.ndarray:
        """The timesteps as an int64 array."""
        return np.asarray(self.timesteps, dtype=np.int64)

    def check_schedule(self, alphas_cumprod: torch.Tensor) -> None:
        """Raise :class:`SamplerError` unless this plan was made for a schedule of this length."""
        if alphas_cumprod.shape[0] != self.num_train_timesteps:
            raise SamplerError(
                "steps",
                f"a plan made for {self.num_train_timesteps} diffusion timesteps cannot sample a model with "
                f"{alphas_cumprod.shape[0]}",
            )


def make_plan(
    sampler: str,
    steps: int,
    alphas_cumprod: torch.Tensor,
    eta: float = 0.0,
    timesteps: Sequence[int] | None = None,
) -> SamplingPlan:
    """The one place a sampler, step count, ``eta`` and explicit DDIM grid are checked (raising
    :class:`SamplerError` naming the option) and turned into a :class:`SamplingPlan` on the schedule
    ``alphas_cumprod``. ``timesteps``: an explicit increasing DDIM grid of ``steps`` entries (DDIM only)."""
    num_train = int(alphas_cumprod.shape[0])
    if sampler not in SAMPLERS:
        raise SamplerError("sampler", f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise SamplerError("steps", f"the number of steps must be an integer, got {steps!r}")
    if eta < 0:
        raise SamplerError("eta", f"eta must be at least 0, got {eta}")
    if sampler == DDIM:
        if timesteps is not None:
            grid = check_timesteps(timesteps, num_train)
            if len(grid) != steps:
                raise SamplerError("steps", f"{steps} steps asked for with a grid of {len(grid)} timesteps")
        else:
            grid = ddim_timesteps(int(steps), num_train)
    else:
        if timesteps is not None:
            raise SamplerError("sampler", f"explicit timesteps are a DDIM grid; the {sampler} sampler takes none")
        if eta:
            raise SamplerError("eta", "the DPM-Solver++ sampler is deterministic: eta must be 0")
        grid = dpm_solver_timesteps(int(steps), alphas_cumprod)
    return SamplingPlan(
        sampler=sampler,
        steps=int(steps),
        timesteps=tuple(int(t) for t in grid),
        eta=float(eta),
        num_train_timesteps=num_train,
        explicit=timesteps is not None,
    )


def resolve_plan(
    alphas_cumprod: torch.Tensor,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float = 0.0,
    recorded: SamplingSetting | None = None,
    timesteps: Sequence[int] | None = None,
) -> tuple[SamplingPlan, str | None]:
    """The plan to sample with, and a line saying why when a checkpoint's record is involved (else None).

    ``sampler``/``steps``: the user's choice (None: not given); ``recorded``: the checkpoint's recorded sampler (a
    distilled student's, ``DiffTalkModel.sampling``); ``timesteps``: an explicit DDIM grid given by the caller.
    Without a record the defaults are :data:`DEFAULT_SAMPLER` / :data:`DEFAULT_STEPS`. With one, what the user
    leaves out comes from the record, and the record's exact timesteps are used whenever the result is its sampler
    with its number of steps; an explicit choice wins.
    """
    if timesteps is not None:
        grid = tuple(int(t) for t in timesteps)
        n = steps if steps is not None else len(grid)
        return make_plan(sampler if sampler is not None else DDIM, n, alphas_cumprod, eta, grid), None
    if recorded is None:
        chosen = sampler if sampler is not None else DEFAULT_SAMPLER
        return make_plan(chosen, steps if steps is not None else DEFAULT_STEPS, alphas_cumprod, eta), None
    chosen = sampler if sampler is not None else recorded.sampler
    if steps is not None:
        n = steps
    else:
        n = recorded.steps if chosen == recorded.sampler else DEFAULT_STEPS
    same = chosen == recorded.sampler == DDIM and n == recorded.steps
    what = f"{recorded.sampler} {recorded.steps} steps (timesteps {list(recorded.timesteps)})"
    try:
        plan = make_plan(chosen, n, alphas_cumprod, eta, recorded.timesteps if same else None)
    except SamplerError as err:  # blame the record for what came from it: the grid, or the sampler/steps not given
        from_record = {"sampler": sampler is None, "steps": same or (steps is None and chosen == recorded.sampler)}
        if from_record.get(err.option, False):
            raise SamplerError(RECORDED, f"its recorded sampler {what} cannot be used: {err.problem}") from None
        raise
    if sampler is None and steps is None:
        return plan, f"sampling as the checkpoint records: {what}"
    flags = (f"--sampler {sampler}" if sampler is not None else "", f"--steps {steps}" if steps is not None else "")
    given = " ".join(f for f in flags if f)
    if same:
        return plan, f"{given} given: the checkpoint's recorded {what}"
    return plan, f"{given} given: sampling with {chosen} {n} steps instead of the checkpoint's recorded {what}"
