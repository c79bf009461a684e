"""Learning-rate scaling of the reference trainer."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def scaled_learning_rate(
    base_learning_rate: float, world_size: int, batch_size: int, accumulate_grad_batches: int, scale_lr: bool
) -> float:
    """``base_lr * world_size * batch_size * accumulate`` when ``scale_lr`` (as the reference), else ``base_lr``.

    ``world_size`` is the number of training processes (GPUs x nodes; 1 on a single CPU process).
    """
    if not scale_lr:
        log.info("learning rate %.2e (not scaled)", base_learning_rate)
        return base_learning_rate
    lr = base_learning_rate * world_size * batch_size * accumulate_grad_batches
    log.info(
        "learning rate %.2e = %d (accumulate_grad_batches) * %d (processes) * %d (batch size) * %.2e (base lr)",
        lr,
        accumulate_grad_batches,
        world_size,
        batch_size,
        base_learning_rate,
    )
    return lr
