"""Learning-rate scaling with the global batch (``model.scale_lr``)."""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)


def scaled_learning_rate(
    base_learning_rate: float,
    world_size: int,
    batch_size: int,
    accumulate_grad_batches: int,
    scale_lr: bool | str,
) -> float:
    """The AdamW learning rate for ``n = world_size * batch_size * accumulate_grad_batches`` samples per step.

    ``scale_lr``: ``True`` or ``"linear"``: ``base_lr * n`` (as the reference); ``"sqrt"``: ``base_lr * sqrt(n)``;
    ``False``: ``base_lr``. ``world_size`` is the number of training processes (GPUs x nodes; 1 on a single CPU
    process).
    """
    if scale_lr is False:
        log.info("learning rate %.2e (not scaled)", base_learning_rate)
        return base_learning_rate
    n = world_size * batch_size * accumulate_grad_batches
    if scale_lr in (True, "linear"):
        lr, rule = base_learning_rate * n, "%d (accumulate_grad_batches) * %d (processes) * %d (batch size)"
    elif scale_lr == "sqrt":
        lr, rule = (
            base_learning_rate * math.sqrt(n),
            "sqrt(%d (accumulate_grad_batches) * %d (processes) * %d (batch size))",
        )
    else:
        raise ValueError(f"model.scale_lr must be false, linear or sqrt (true: linear), got {scale_lr!r}")
    log.info(
        f"learning rate %.2e = {rule} * %.2e (base lr)",
        lr,
        accumulate_grad_batches,
        world_size,
        batch_size,
        base_learning_rate,
    )
    return lr
