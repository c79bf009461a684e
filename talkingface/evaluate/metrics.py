"""``batch_metrics``, ``psnr`` and ``ssim`` under their older name: they live in :mod:`talkingface.metrics`, where
training and evaluation both import them; this module only hands them on."""

from talkingface.metrics.batch import batch_metrics
from talkingface.metrics.image import psnr, ssim

__all__ = ["batch_metrics", "psnr", "ssim"]
