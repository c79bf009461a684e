"""Timed training steps through the product's own trainer, for the training speed benchmarks.

``fit_steps`` runs what ``talkingface train`` runs after its data checks: the same config loader, seed, TF32
switch, Lightning module (``talkingface.training.run.build_module``: channels-last, fused AdamW, ``train.compile``)
and ``pl.Trainer`` (``build_trainer``: precision plugin, gradient clipping, EMA update, checkpoint and throughput
callbacks) — only the data loader differs: a list of ready batches in memory (random images or cached latents of
the dataset's shapes), so the figures are the training step's, not the disk's. A callback times every optimizer
step (synchronised on CUDA) and keeps its loss.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from talkingface.training.config import TrainingConfig, load_training_config
from talkingface.training.devices import DeviceSpec
from talkingface.training.module import LatentDiffusion
from talkingface.training.run import build_module, build_trainer
from talkingface.training.run_dir import RunPaths
from talkingface.training.speed import compile_unet, set_tf32

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIG = ROOT / "configs" / "latent-diffusion" / "talking.yaml"
TINY_CONFIG = ROOT / "configs" / "latent-diffusion" / "talking-tiny.yaml"

#: Overrides every timed run gets: nothing written or sampled while timing (no checkpoints, image grids,
#: validation samples or slim export; the last checkpoint of ``LastCheckpoint`` comes after the last timed step).
QUIET = (
    "train.checkpoint_every_n_steps=1000000",
    "train.image_log_every_n_steps=0",
    "train.export_slim_on_end=false",
    "train.val_metrics_batches=0",
    "train.num_sanity_val_steps=0",
    "train.log_every_n_steps=1",
)


def synthetic_batch(config: TrainingConfig, batch_size: int, cached: bool) -> dict[str, torch.Tensor]:
    """A random dataset batch on the CPU, as the data loader yields it: images (B, S, S, 3) in [-1, 1] (what the
    reference trainer encodes every step) or the latent cache's latents (``cached``)."""
    c = config.model
    g = torch.Generator().manual_seed(0)
    batch = {
        "landmarks": torch.rand(batch_size, c.conditioning.landmark_count, 2, generator=g) * c.first_stage.resolution,
        "audio_smooth": torch.randn(
            batch_size,
            c.conditioning.audio_smooth_windows,
            c.conditioning.audio_window,
            c.conditioning.audio_feature_dim,
            generator=g,
        ),
    }
    if cached:
        shape = (batch_size, c.first_stage.embed_dim, c.unet.image_size, c.unet.image_size)
        for key in ("latent", "reference_latent", "masked_latent"):
            batch[key] = torch.randn(shape, generator=g)
    else:
        s = c.first_stage.resolution
        for key in ("image", "reference_img", "image_mask"):
            batch[key] = torch.rand(batch_size, s, s, 3, generator=g) * 2 - 1
    return batch


@dataclass
class StepTimes:
    """Wall time of each optimizer step (seconds, the first one includes any compilation) and its loss."""

    seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    module: LatentDiffusion | None = None

    def mean_s(self, skip: int) -> float:
        """The mean step time after the first ``skip`` steps."""
        timed = self.seconds[skip:]
        if not timed:
            raise ValueError(f"no steps after the first {skip} (ran {len(self.seconds)})")
        return sum(timed) / len(timed)


class _StepTimer(pl.Callback):
    def __init__(self, device: torch.device, times: StepTimes) -> None:
        self.device, self.times = device, times
        self._start = 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, idx: int) -> None:
        self._start = self._now()

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.times.seconds.append(self._now() - self._start)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.times.losses.append(float(loss.detach()) if isinstance(loss, torch.Tensor) else float("nan"))


def fit_steps(
    config: str | Path,
    overrides: Sequence[str],
    batch_size: int,
    steps: int,
    device: torch.device,
    cached: bool,
    compile_backend: str = "inductor",
) -> StepTimes:
    """Run ``steps`` optimizer steps of the product's trainer on ``config`` + ``overrides`` (e.g.
    ``train.precision=bf16-mixed``, ``train.compile=blocks``) with random batches of ``batch_size``; return each
    step's wall time and loss. The first stage stays randomly initialised (no weights are read).
    ``compile_backend``: ``torch.compile``'s backend for ``train.compile`` (``aot_eager`` skips code generation)."""
    cfg = load_training_config(
        config, [*overrides, *QUIET, f"train.max_steps={steps}", "model.first_stage.ckpt_path=null"]
    )
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    set_tf32(cfg.train.tf32)
    module = build_module(cfg, cfg.model.base_learning_rate, load_vq=False)
    if compile_backend != "inductor":  # nothing has compiled yet (that happens at the first call): re-wrap
        compile_unet(module, cfg.train.compile, backend=compile_backend)
    spec = DeviceSpec("gpu", [device.index or 0]) if device.type == "cuda" else DeviceSpec("cpu", 1)
    times = StepTimes(module=module)
    batch = synthetic_batch(cfg, batch_size, cached)
    loader = DataLoader([batch] * steps, batch_size=None, pin_memory=device.type == "cuda")
    with tempfile.TemporaryDirectory(prefix="talkingface-bench-") as tmp:
        trainer, _ = build_trainer(cfg, spec, RunPaths(Path(tmp)), [_StepTimer(device, times)])
        trainer.fit(module, train_dataloaders=loader)
    if len(times.seconds) != steps:
        raise RuntimeError(f"the trainer ran {len(times.seconds)} steps, not {steps}")
    return times


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The training benchmarks' choice of model and machine: ``--tiny``, ``--config``, ``--set``, ``--batch-size``
    (see :func:`chosen_model`) and ``--device``."""
    parser.add_argument("--tiny", action="store_true", help="tiny model (configs/latent-diffusion/talking-tiny.yaml)")
    parser.add_argument("--config", type=Path, default=None, help="config YAML (default: the paper config)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default 8 (2 with --tiny)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def chosen_model(args: argparse.Namespace) -> tuple[Path, int]:
    """``(config, batch size)`` the options of :func:`add_model_options` choose."""
    config = args.config or (TINY_CONFIG if args.tiny else PAPER_CONFIG)
    return config, args.batch_size or (2 if args.tiny else 8)


def free_memory(device: torch.device) -> None:
    """Free a finished run's model and optimizer before the next run is timed."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
