"""PSNR and SSIM with their standard definitions, in torch (CPU or GPU), batched.

SSIM is Wang et al. 2004 as computed by ``skimage.metrics.structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=R)``: an 11-tap Gaussian window (sigma 1.5, truncated at
3.5 sigma), ``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2``, the SSIM map averaged over the positions where the
window fits inside the image (skimage crops the filter's border of 5 pixels) and over channels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: SSIM constants (Wang et al. 2004).
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: Window side for sigma 1.5 (``2 * int(3.5 * 1.5 + 0.5) + 1``); images must be at least this large.
SSIM_WINDOW = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1


def _check_pair(pred: torch.Tensor, gt: torch.Tensor) -> None:
    if pred.shape != gt.shape or pred.ndim != 4:
        raise ValueError(
            f"expected two (B, C, H, W) tensors of the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}"
        )


def psnr(pred: torch.Tensor, gt: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB, ``(B,)``: ``10 log10(R^2 / MSE)`` over all pixels and channels; ``inf`` when equal."""
    _check_pair(pred, gt)
    mse = (pred - gt).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> np.ndarray:
    """The normalised 1-D Gaussian taps scipy's ``gaussian_filter`` uses (radius ``int(truncate*sigma+0.5)``)."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _blur(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of every channel of ``x`` (B, C, H, W)."""
    c = x.shape[1]
    k = taps.numel()
    x = F.conv2d(x, taps.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, taps.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim(pred: torch.Tensor, gt: torch.Tensor, data_range: float = 1.0, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Per-image mean SSIM, ``(B,)``, averaged over valid window positions and channels (see module doc)."""
    _check_pair(pred, gt)
    window = 2 * int(SSIM_TRUNCATE * sigma + 0.5) + 1
    if min(pred.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {tuple(pred.shape[-2:])}")
    taps = torch.as_tensor(gaussian_window(sigma), dtype=pred.dtype, device=pred.device)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    b = pred.shape[0]
    stats = _blur(torch.cat([pred, gt, pred * pred, gt * gt, pred * gt]), taps)
    mx, my, mxx, myy, mxy = stats.split(b)
    vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1)


def to_tensor(image: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``(H, W, C)`` (or ``(H, W)``) array -> ``(1, C, H, W)`` tensor, values unchanged."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(dtype).unsqueeze(0)


def default_range(image: np.ndarray) -> float:
    """255 for uint8 images, 1.0 for floats (the convention of the task; pass ``data_range`` otherwise)."""
    return 255.0 if np.asarray(image).dtype == np.uint8 else 1.0


def psnr_image(pred: np.ndarray, gt: np.ndarray, data_range: float | None = None) -> float:
    """PSNR of two ``(H, W[, C])`` images (float64 arithmetic)."""
    r = default_range(gt) if data_range is None else data_range
    return float(psnr(to_tensor(pred), to_tensor(gt), r)[0])


def ssim_image(pred: np.ndarray, gt: np.ndarray, data_range: float | None = None) -> float:
    """SSIM of two ``(H, W[, C])`` images (float64 arithmetic), equal to skimage's with the settings above."""
    r = default_range(gt) if data_range is None else data_range
    return float(ssim(to_tensor(pred), to_tensor(gt), r)[0])
