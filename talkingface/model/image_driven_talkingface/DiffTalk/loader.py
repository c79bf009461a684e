"""Loader of a trained DiffTalk: ``get_difftalk_inference`` returns the engine (``DiffTalkModel``, EMA weights,
eval mode, chosen device). Imports no training framework."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from .checkpoint import (
    CheckpointError,
    check_feature_kind,
    extract_state_dict,
    has_first_stage,
    load_checkpoint_file,
    load_difftalk_checkpoint,
)
from .config import (
    REPO_ROOT,
    DiffTalkConfig,
    checkpoint_config,
    checkpoint_feature_kind,
    default_config_path,
    load_config,
    with_audio_feature_kind,
)
from .model import DiffTalkModel

log = logging.getLogger(__name__)

DEFAULT_CKPT = Path("checkpoints/DiffTalk/model.ckpt")
DEFAULT_FIRST_STAGE = Path("models/model.ckpt")


def resolve_path(path: str | Path) -> Path:
    """A relative path is looked up in the working directory first, then in the repository root."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    alt = REPO_ROOT / path
    return alt if alt.exists() else path


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def get_difftalk_inference(
    config: str | Path | DiffTalkConfig | dict[str, Any] | None = None,
    ckpt: str | Path | None = None,
    first_stage_ckpt: str | Path | None = None,
    device: str | torch.device | None = None,
    use_ema: bool = True,
    trust_checkpoint: bool = False,
) -> DiffTalkModel:
    """Build DiffTalk, load a trained checkpoint strictly and return the engine in eval mode.

    Args:
        config: YAML path, dict or ``DiffTalkConfig``. Default: the config stored in the checkpoint by our
            trainer, else ``configs/latent-diffusion/talking-inference.yaml``.
        ckpt: DiffTalk checkpoint (reference Lightning format, ours, or a safetensors export).
            Default ``checkpoints/DiffTalk/model.ckpt``.
        first_stage_ckpt: VQ first stage, needed only when ``ckpt`` holds none. Default ``models/model.ckpt``.
        device: default CUDA when available, else CPU.
        use_ema: put the EMA weights into the UNet.
        trust_checkpoint: allow full unpickling of a checkpoint that is not plain tensors (trusted files only).
    """
    ckpt_path = resolve_path(ckpt if ckpt is not None else DEFAULT_CKPT)
    if not ckpt_path.is_file():
        raise CheckpointError(
            f"DiffTalk checkpoint not found: {ckpt_path}. Put a trained checkpoint at {DEFAULT_CKPT} "
            "(train one with `talkingface train`) or pass --ckpt PATH"
        )
    raw = load_checkpoint_file(ckpt_path, trust_checkpoint)
    if config is None:
        stored = checkpoint_config(raw)
        cfg = load_config(stored) if stored is not None else load_config(default_config_path())
    else:
        cfg = load_config(config)
    stored_kind = checkpoint_feature_kind(raw)
    check_feature_kind(stored_kind, cfg.model.conditioning.audio_feature_kind, str(ckpt_path))
    if stored_kind is not None:
        cfg = with_audio_feature_kind(cfg, stored_kind)

    model = DiffTalkModel(cfg.model)
    fs_path = None
    if not has_first_stage(extract_state_dict(raw)):
        fs_path = resolve_path(first_stage_ckpt if first_stage_ckpt is not None else DEFAULT_FIRST_STAGE)
        if not fs_path.is_file():
            raise CheckpointError(
                f"{ckpt_path} holds no first-stage weights and the VQ first stage was not found at {fs_path}. "
                f"Put the latent-diffusion vq-f4 checkpoint at {DEFAULT_FIRST_STAGE} or pass --first-stage-ckpt PATH"
            )
    del raw
    load_difftalk_checkpoint(model, ckpt_path, trust_checkpoint, fs_path)
    if use_ema:
        if not model.use_ema:
            raise CheckpointError(
                "the EMA weights were asked for but model.diffusion.use_ema is false (use --raw-weights)"
            )
        model.model_ema.copy_to(model.model)
    model.eval().requires_grad_(False)
    model.to(pick_device(device))
    log.info("DiffTalk ready on %s (%s weights)", model.device, "EMA" if use_ema else "raw")
    return model
