"""The learning curve of a synthetic training run: held-out evaluation as a callback of the product's trainer.

``benchmarks/learnability.py`` passes :class:`HeldoutCurve` to the ``talkingface train`` command's entry point (the
one of ``trainer/DiffTalkTrainer.py``), so the model it measures is the one the trainer trains: its LightningModule,
optimizer, clipping, EMA and data module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from talkingface.model.image_driven_talkingface.DiffTalk.plan import DEMO_STEPS
from talkingface.synthetic.learn import EvalResult, evaluate_heldout

log = logging.getLogger(__name__)


class HeldoutCurve(pl.Callback):
    """Every ``every`` optimizer steps and at the end of training, generate the held-out identities' mouths with the
    EMA weights (:func:`~talkingface.synthetic.learn.evaluate_heldout`) and hand the result to
    ``on_point(step, result, point, module)``; ``point`` is the curve entry (step, pooled r, per-video r, PSNR,
    SSIM, mean training loss since the last point). Runs on global rank 0 only; evaluation time is logged apart
    from training time (``train_seconds`` of each point excludes it)."""

    def __init__(
        self,
        root: str | Path,
        split: str | Path,
        every: int,
        on_point: Callable[[int, EvalResult, dict[str, Any], pl.LightningModule], None],
        eval_frames: int = 100,
        sample_steps: int = DEMO_STEPS,
        seed: int = 0,
        train_seconds: float = 0.0,
    ) -> None:
        self.root, self.split = Path(root), Path(split)
        self.every = int(every)
        self.on_point = on_point
        self.eval_frames, self.sample_steps, self.seed = eval_frames, sample_steps, seed
        self.points: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._last_step = -1
        self._train_seconds = float(train_seconds)  # training time before this run (a resumed one)
        self._t0: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._losses.append(float(loss.detach()))
        step = trainer.global_step
        if self.every > 0 and step % self.every == 0 and step != self._last_step:
            self._evaluate(trainer, pl_module, step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._last_step:
            self._evaluate(trainer, pl_module, trainer.global_step)

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        self._last_step = step
        if self._t0 is not None:
            self._train_seconds += time.perf_counter() - self._t0
        if trainer.is_global_zero and step > 0:
            t0 = time.perf_counter()
            was_training = pl_module.training
            pl_module.eval()
            try:
                res = evaluate_heldout(
                    pl_module,  # type: ignore[arg-type]  # LatentDiffusion is a DiffTalkModel
                    self.root,
                    self.split,
                    self.eval_frames,
                    self.sample_steps,
                    seed=self.seed,
                    progress=False,
                )
            finally:
                pl_module.train(was_training)
            losses = self._losses or [float("nan")]
            point = {
                "step": step,
                "correlation": res.correlation,
                "correlation_per_video": res.correlation_per_video,
                "mouth_psnr": res.mouth_psnr,
                "mouth_ssim": res.mouth_ssim,
                "loss": sum(losses) / len(losses),
                "train_seconds": round(self._train_seconds, 1),
                "eval_seconds": round(time.perf_counter() - t0, 1),
                "videos": [{**asdict(v), "silence_residual": v.silence_residual} for v in res.videos],
            }
            self.points.append(point)
            log.info(
                "held-out @ %d steps: r = %.3f (per identity %s), mouth PSNR %.2f dB, SSIM %.3f",
                step,
                res.correlation,
                [round(r, 3) for r in res.correlation_per_video],
                res.mouth_psnr,
                res.mouth_ssim,
            )
            self.on_point(step, res, point, pl_module)
        self._losses = []
        self._t0 = time.perf_counter()
