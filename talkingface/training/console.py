"""What the trainer prints: a progress bar over the whole run, and none of Lightning's tips or known noise."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

#: Lightning log lines (logger ``pytorch_lightning.*``) that say nothing about this run: advertisements.
_QUIET_LOG_PREFIXES = ("💡 Tip:",)
#: Warnings (by the start of their message) that are noise for this trainer, with why.
_QUIET_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # torch's deprecation, raised inside Lightning's own code
    r"Checkpoint directory .* exists and is not empty",  # run folders are claimed (and refused) by run_dir.py
    r".*module\(s\) in eval mode",  # the frozen first stage is in eval mode on purpose
)


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_QUIET_LOG_PREFIXES)


_FILTER = _DropAdvertisements()


def quiet_lightning() -> None:
    """Install the filters (idempotent): Lightning's tips on its rank-zero logger, known warnings by message."""
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    for message in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


class StepProgressBar(TQDMProgressBar):
    """The training bar counts optimizer steps up to ``train.max_steps`` (when set) instead of the batches of one
    epoch, so it has a total and an ETA for the whole run; after ``--resume`` it starts at the resumed step and the
    rate (and ETA) count only this run's steps. Without ``max_steps`` it is Lightning's per-epoch bar."""

    def _by_step(self, trainer: pl.Trainer) -> bool:
        return trainer.max_steps is not None and trainer.max_steps > 0

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        if self._by_step(trainer):
            bar = self.train_progress_bar
            bar.reset(total=trainer.max_steps)
            bar.initial = bar.n = trainer.global_step
            bar.set_description(f"step (epoch {trainer.current_epoch})")

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if not self._by_step(trainer):
            super().on_train_epoch_start(trainer, *args)
        elif self.train_progress_bar is not None:
            self.train_progress_bar.set_description(f"step (epoch {trainer.current_epoch})")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._by_step(trainer):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        bar, step = self.train_progress_bar, trainer.global_step
        if bar is not None and not bar.disable and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes
