"""Cheap metrics for validation during training: PSNR and SSIM, on the whole image and on the mouth region.

``batch_metrics`` works on the tensors a LightningModule already has (``(B, 3, H, W)`` in ``[-1, 1]``, any
device) and returns plain floats to pass to ``self.log_dict``. See docs/evaluation.md for the hook.
"""

from __future__ import annotations

import numpy as np
import torch

from talkingface.metrics.image import SSIM_WINDOW, psnr, ssim
from talkingface.metrics.regions import mouth_box, points_box

__all__ = ["batch_metrics", "psnr", "ssim"]


def _unit(x: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` -> ``[0, 1]``, clamped as when the frames are saved."""
    return ((x.detach().float() + 1.0) / 2.0).clamp(0.0, 1.0)


def _region_boxes(region: torch.Tensor, b: int, hw: tuple[int, int]) -> list[tuple[int, int, int, int] | None]:
    """Bounding boxes of the nonzero pixels of a ``(B, H, W)`` / ``(B, 1, H, W)`` / ``(B, H, W, 1)`` mask."""
    r = region.detach()
    if r.ndim == 4:
        r = r[:, 0] if r.shape[1] == 1 else r[..., 0]
    if r.shape != (b, *hw):
        raise ValueError(
            f"region mask must be (B, H, W) = {(b, *hw)} (or with a singleton channel), got {tuple(region.shape)}"
        )
    boxes: list[tuple[int, int, int, int] | None] = []
    for m in (r != 0).cpu().numpy():
        ys, xs = np.nonzero(m)
        boxes.append(None if len(ys) == 0 else points_box(np.stack([xs, ys], 1).astype(np.float64), hw, 0.0))
    return boxes


def _boxed(pred: torch.Tensor, gt: torch.Tensor, boxes: list[tuple[int, int, int, int] | None]) -> dict[str, float]:
    ps, ss = [], []
    for i, box in enumerate(boxes):
        if box is None:
            continue
        x0, y0, x1, y1 = box
        if min(x1 - x0, y1 - y0) < SSIM_WINDOW:
            continue
        p, g = pred[i : i + 1, :, y0:y1, x0:x1], gt[i : i + 1, :, y0:y1, x0:x1]
        ps.append(psnr(p, g))
        ss.append(ssim(p, g))
    if not ps:
        return {"psnr": float("nan"), "ssim": float("nan")}
    return {"psnr": torch.cat(ps).mean().item(), "ssim": torch.cat(ss).mean().item()}


@torch.no_grad()
def batch_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    landmarks: torch.Tensor | np.ndarray | None = None,
    region: torch.Tensor | None = None,
    mouth_margin: float = 0.25,
) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM over a batch, in ``[0, 1]`` data range after mapping ``[-1, 1]`` to it.

    Args:
        pred, gt: ``(B, 3, H, W)`` images in ``[-1, 1]`` (clamped), same device.
        landmarks: optional ``(B, 68, 2)`` iBUG landmarks in pixels of these images (x, y): adds
            ``mouth_psnr`` / ``mouth_ssim`` on the box around points 48-67 grown by ``mouth_margin``.
        region: optional mask, nonzero where to evaluate (e.g. ``1 - image_mask`` for DiffTalk's generated
            lower half): adds ``region_psnr`` / ``region_ssim`` on the mask's bounding box.

    Returns:
        ``{"psnr", "ssim"[, "mouth_psnr", "mouth_ssim"][, "region_psnr", "region_ssim"]}`` as floats; PSNR is
        the mean of per-image values (``inf`` only if an image is reproduced exactly).
    """
    if pred.shape != gt.shape or pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) pred and gt, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    p, g = _unit(pred), _unit(gt.to(pred.device))
    out = {"psnr": psnr(p, g).mean().item(), "ssim": ssim(p, g).mean().item()}
    hw = (p.shape[2], p.shape[3])
    if landmarks is not None:
        lms = landmarks.detach().cpu().double().numpy() if torch.is_tensor(landmarks) else np.asarray(landmarks)
        if lms.shape != (p.shape[0], 68, 2):
            raise ValueError(f"landmarks must be (B, 68, 2) = {(p.shape[0], 68, 2)}, got {lms.shape}")
        boxes = [mouth_box(lm, hw, mouth_margin) for lm in lms]
        out.update({f"mouth_{k}": v for k, v in _boxed(p, g, boxes).items()})
    if region is not None:
        out.update({f"region_{k}": v for k, v in _boxed(p, g, _region_boxes(region, p.shape[0], hw)).items()})
    return out
