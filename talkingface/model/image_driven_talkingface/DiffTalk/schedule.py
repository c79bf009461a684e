"""The diffusion schedule: betas, the derived buffers (latent-diffusion names) and ``extract`` (per-timestep
lookup; ``DiffTalkModel.q_sample`` is built on it)."""

from __future__ import annotations

import numpy as np
import torch

SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def linear_sqrt_betas(timesteps: int, linear_start: float, linear_end: float) -> np.ndarray:
    """latent-diffusion's "linear" schedule: linear in sqrt(beta), computed in float64."""
    return np.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=np.float64) ** 2


def schedule_buffers(betas: np.ndarray) -> dict[str, torch.Tensor]:
    """All float32 schedule buffers of the reference model, computed in float64 first."""
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    values = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }
    return {k: torch.tensor(values[k], dtype=torch.float32) for k in SCHEDULE_BUFFERS}


def extract(a: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``a[t]`` shaped (B, 1, 1, ...) to broadcast over a tensor of ``ndim`` dims."""
    return a.gather(-1, t).reshape(t.shape[0], *((1,) * (ndim - 1)))
