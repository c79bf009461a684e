"""FID: the Fréchet distance between Gaussians fitted to image features (Heusel et al. 2017).

The feature extractor is a user-supplied TorchScript file (nothing is downloaded), e.g. NVIDIA's
``inception-2015-12-05.pt`` from StyleGAN2-ADA, the standard FID Inception network exported to TorchScript.
It is called on ``(N, 3, size, size)`` float RGB batches in ``[0, 255]``, with ``return_features=True`` when
its ``forward`` accepts that argument, and must return ``(N, D)`` (or ``(N, D, 1, 1)``) features.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from talkingface.evaluate.errors import EvaluationError

log = logging.getLogger(__name__)

#: Input side for the feature extractor (Inception's 299).
FID_SIZE = 299


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, rows are samples) of ``(N, D)`` features."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"need (N >= 2, D) features, got {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` as in pytorch-fid (an ``eps`` ridge when singular)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shape mismatch: mu {mu1.shape} {mu2.shape}, sigma {sigma1.shape} {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("FID: singular product of covariances; adding %g to their diagonals", eps)
        offset = np.eye(len(mu1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def load_feature_extractor(path: str | Path, device: str = "cpu") -> torch.jit.ScriptModule:
    """``torch.jit.load`` a TorchScript feature extractor, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(path, "FID feature extractor not found (--fid-features expects a TorchScript file)")
    try:
        model = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as e:
        raise EvaluationError(path, f"not a TorchScript module (torch.jit.load failed: {e})") from e
    return model.eval()


def _accepts_return_features(model: torch.jit.ScriptModule) -> bool:
    try:
        return any(arg.name == "return_features" for arg in model.forward.schema.arguments)
    except AttributeError:
        return False


@torch.no_grad()
def extract_features(
    frames: Sequence[np.ndarray],
    model: torch.jit.ScriptModule,
    size: int = FID_SIZE,
    batch: int = 32,
    device: str = "cpu",
) -> np.ndarray:
    """``(N, D)`` features of RGB uint8 frames resized (bilinear) to ``size`` x ``size``."""
    import cv2

    kwargs = {"return_features": True} if _accepts_return_features(model) else {}
    out = []
    for start in range(0, len(frames), batch):
        chunk = [cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in frames[start : start + batch]]
        x = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float().to(device)
        feats = model(x, **kwargs)
        out.append(feats.reshape(len(chunk), -1).double().cpu().numpy())
    return np.concatenate(out)


def fid_from_frames(
    pred: Sequence[np.ndarray], gt: Sequence[np.ndarray], extractor: str | Path, device: str = "cpu"
) -> float:
    """FID between the predicted and ground-truth frame sets with the TorchScript extractor at ``extractor``."""
    model = load_feature_extractor(extractor, device)
    mu1, s1 = feature_statistics(extract_features(pred, model, device=device))
    mu2, s2 = feature_statistics(extract_features(gt, model, device=device))
    return frechet_distance(mu1, s1, mu2, s2)
