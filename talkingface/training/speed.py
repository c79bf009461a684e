"""Speed settings that do not change the maths: TF32, ``torch.compile`` of the UNet."""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Compiled variants one UNet block may keep (grad and no-grad, training and validation batch sizes, ...). Dynamo
#: counts recompilations per code object, and every block runs the same ``TimestepEmbedSequential.forward``, so the
#: limit is raised to this many per block; at the default (8) the blocks after the eighth silently ran eagerly.
VARIANTS_PER_BLOCK = 8


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for fp32 matmuls and convolutions (Ampere and newer GPUs; no effect on CPU).

    ``False`` leaves PyTorch's defaults alone (TF32 convolutions, full-precision matmuls).
    """
    if enabled:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")


def unet_blocks(unet: nn.Module) -> list[nn.Module]:
    """The UNet's repeated blocks in the order they run: ``input_blocks[i]``, ``middle_block``, ``output_blocks[i]``."""
    return [*unet.input_blocks, unet.middle_block, *unet.output_blocks]


def compile_unet(model: nn.Module, mode: bool | str = "full", backend: str = "inductor") -> None:
    """Compile ``model.model.diffusion_model`` in place (``nn.Module.compile``: parameter names, and so
    checkpoints, are unchanged), as ``train.compile`` says:

    - ``"full"`` (or ``True``): the whole UNet as one graph: the fastest steps after the longest first step.
    - ``"blocks"``: each of :func:`unet_blocks` on its own with static shapes (``dynamic=False``); blocks of the same
      structure and shapes share one compiled graph, and each graph is small, so the first step takes less long.
      The time embedding, the UNet's ``out`` head and the skip concatenations stay eager.
    - ``False``: nothing.

    ``backend``: ``torch.compile``'s backend (tests use ``"aot_eager"``, which skips code generation).
    """
    if mode is False:
        return
    unet = model.model.diffusion_model
    if mode in (True, "full"):
        unet.compile(backend=backend)
        log.info("UNet compiled with torch.compile (the first steps are slow while it compiles)")
        return
    if mode != "blocks":
        raise ValueError(f"train.compile must be false, blocks or full (true: full), got {mode!r}")
    blocks = unet_blocks(unet)
    limit = VARIANTS_PER_BLOCK * len(blocks)
    if torch._dynamo.config.recompile_limit < limit:
        torch._dynamo.config.recompile_limit = limit
    for block in blocks:
        block.compile(dynamic=False, backend=backend)
    log.info(
        "UNet blocks compiled one by one with torch.compile (%d blocks; blocks alike share code; dynamo recompile "
        "limit %d; the first steps are slow while they compile)",
        len(blocks),
        torch._dynamo.config.recompile_limit,
    )
