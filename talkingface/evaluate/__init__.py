"""Evaluation of talking-face videos: PSNR, SSIM, LMD, and with user-supplied weights LPIPS, FID, LSE-C/D.

``python -m talkingface.evaluate --pred PRED --gt GT --out report.json`` (see docs/evaluation.md);
``talkingface.metrics.batch.batch_metrics`` for validation during training.
"""

from talkingface.evaluate.errors import EvaluationError, MissingWeightsError
from talkingface.evaluate.harness import EvalOptions, EvalResult, evaluate, evaluate_frames
from talkingface.metrics.batch import batch_metrics

__all__ = [
    "EvalOptions",
    "EvalResult",
    "EvaluationError",
    "MissingWeightsError",
    "batch_metrics",
    "evaluate",
    "evaluate_frames",
]
