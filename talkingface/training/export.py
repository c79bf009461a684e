"""Slim export for inference-only use: EMA UNet + condition encoders + config, as safetensors.

    python -m talkingface.training.export logs/<run>/checkpoints/last.ckpt exported/difftalk.safetensors

Writes ``difftalk.safetensors`` (config and feature kind in its metadata) and ``difftalk.yaml`` (the config) next
to it. Load with ``get_difftalk_inference(config="exported/difftalk.yaml", ckpt="exported/difftalk.safetensors")``
(the VQ first stage then comes from ``models/model.ckpt``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import (
    CheckpointError,
    export_safetensors,
    load_checkpoint_file,
    load_difftalk_checkpoint,
)
from talkingface.model.image_driven_talkingface.DiffTalk.config import config_to_dict, load_config, save_config
from talkingface.training.module import CONFIG_CKPT_KEY, FEATURE_KIND_CKPT_KEY, LatentDiffusion

log = logging.getLogger(__name__)


def export_slim(module: Any, path: str | Path) -> Path:
    """Write ``path`` (safetensors, EMA weights) and the config as ``path`` with suffix ``.yaml``."""
    from talkingface.training.callbacks import slim_metadata

    path = Path(path)
    meta = slim_metadata(module)
    out = export_safetensors(module, path, slim=True, metadata=meta)
    run_config = getattr(module, "run_config", None)
    if run_config is not None:
        cfg = load_config(run_config)
        save_config(cfg, path.with_suffix(".yaml"))
    log.info("slim export written to %s", out)
    return out


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    """Slim-export a trainer checkpoint (it must hold ``difftalk_config``, as every trainer checkpoint does)."""
    raw = load_checkpoint_file(ckpt)
    stored = raw.get(CONFIG_CKPT_KEY)
    if not isinstance(stored, dict):
        raise CheckpointError(f"{ckpt} has no '{CONFIG_CKPT_KEY}' entry: it was not written by the DiffTalk trainer")
    cfg = load_config(stored)
    kind = raw.get(FEATURE_KIND_CKPT_KEY)
    if isinstance(kind, str):
        cfg.model.conditioning.audio_feature_kind = kind
    del raw
    model = LatentDiffusion(cfg.model, run_config=config_to_dict(cfg))
    load_difftalk_checkpoint(model, ckpt)
    return export_slim(model, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", help="trainer checkpoint (.ckpt)")
    parser.add_argument("out", help="output .safetensors path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        export_checkpoint(args.ckpt, args.out)
    except CheckpointError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
