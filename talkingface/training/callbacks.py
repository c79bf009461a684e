"""Lightning callbacks of the DiffTalk trainer: throughput, sample grids, signal checkpoints, slim export."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from talkingface.model.image_driven_talkingface.DiffTalk.plan import IMAGE_LOG_DDIM_STEPS
from talkingface.training.export import export_slim
from talkingface.training.images import make_grid, write_png

log = logging.getLogger(__name__)


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        for value in batch.values():
            if isinstance(value, torch.Tensor):
                return int(value.shape[0])
    return 0


class ThroughputMonitor(pl.Callback):
    """Logs ``train/samples_per_sec`` (all processes together, data loading included) to the progress bar."""

    def __init__(self, smoothing: float = 0.9) -> None:
        self.smoothing = smoothing
        self._last: float | None = None
        self._rate: float | None = None

    def _reset(self, *args: Any) -> None:
        self._last = None

    on_train_epoch_start = _reset
    on_validation_end = _reset

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._last is not None and now > self._last:
            rate = _batch_size(batch) * trainer.world_size / (now - self._last)
            self._rate = rate if self._rate is None else self.smoothing * self._rate + (1 - self.smoothing) * rate
            pl_module.log("train/samples_per_sec", self._rate, prog_bar=True, on_step=True, rank_zero_only=True)
        self._last = now


class ImageLogger(pl.Callback):
    """Every ``every_n_steps`` optimizer steps, rank 0 writes a grid (input | reference | masked | generated, one
    row per sample) to ``<run>/images/train/step-<step>.png`` and to TensorBoard. 0 disables it."""

    def __init__(
        self, image_dir: str | Path, every_n_steps: int, max_images: int = 8, ddim_steps: int = IMAGE_LOG_DDIM_STEPS
    ) -> None:
        self.image_dir = Path(image_dir)
        self.every_n_steps = every_n_steps
        self.max_images = max_images
        self.ddim_steps = ddim_steps
        self._logged_step = -1

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps <= 0 or step == 0 or step % self.every_n_steps or step == self._logged_step:
            return
        self._logged_step = step
        if trainer.is_global_zero:
            self.log_grid(trainer, pl_module, batch, step)

    @torch.no_grad()
    def log_grid(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, step: int) -> Path:
        generator = torch.Generator(device=pl_module.device).manual_seed(step)
        images = pl_module.log_images(
            batch, max_images=self.max_images, ddim_steps=self.ddim_steps, generator=generator
        )
        grid = make_grid(images)
        path = write_png(self.image_dir / f"step-{step:09d}.png", grid)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image("train/samples", grid, global_step=step, dataformats="HWC")
        log.info("wrote sample grid %s", path)
        return path


class LastCheckpoint(pl.Callback):
    """Owns ``last.ckpt``: written every ``every_n_steps`` optimizer steps, when training ends, and on SIGTERM /
    SIGINT. A signal lets the current step finish, then ``last.ckpt`` is written and training stops; all ranks stop
    at the same step (the flag is reduced across processes). A second signal exits at once (``SystemExit`` with
    status 128 + signal; Lightning's own handlers would exit with 0 for SIGTERM and 1 for SIGINT).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, ckpt_path: str | Path, every_n_steps: int = 0) -> None:
        self.ckpt_path = Path(ckpt_path)
        self.every_n_steps = every_n_steps
        self.received: int | None = None
        self._signalled = False  # this process got a signal (``received`` may also come from another rank)
        self._saved_step = -1
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._signalled:  # the second signal: no checkpoint, exit status 128 + signal (as the shell reports it)
            log.warning("received %s again: exiting now without a checkpoint", name)
            raise SystemExit(128 + int(signum))
        self._signalled = True
        self.received = signum
        log.warning("received %s: saving a checkpoint after this step (send it again to exit now)", name)

    def _install(self) -> None:
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave signals alone
                self._previous.pop(sig, None)

    def _uninstall(self) -> None:
        for sig, handler in self._previous.items():
            if signal.getsignal(sig) == self._handler:
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _save(self, trainer: pl.Trainer) -> None:
        if self._saved_step != trainer.global_step:
            trainer.save_checkpoint(self.ckpt_path, weights_only=False)  # the full state (and no log line)
            self._saved_step = trainer.global_step

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received = None
        self._signalled = False
        self._saved_step = trainer.global_step  # a resumed run starts from this very checkpoint
        self._install()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            self._save(trainer)
            trainer.should_stop = True
            log.warning("stopped by a signal at step %d; wrote %s", trainer.global_step, self.ckpt_path)
            self.received = self.received or signal.SIGTERM  # another rank got it
        elif self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._uninstall()
        if trainer.global_step > 0:
            self._save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._uninstall()


class SlimExport(pl.Callback):
    """At the end of training rank 0 writes the EMA UNet + condition encoders as safetensors, with the config and
    the audio feature kind in the file's metadata (``difftalk_config`` as JSON, the kind inside it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        export_slim(pl_module, self.path)
