"""Loader of a trained DiffTalk: ``get_difftalk_inference`` returns the engine (``DiffTalkModel``, EMA weights,
eval mode, chosen device). Imports no training framework.

A checkpoint carries its config: a trainer ``.ckpt`` under ``difftalk_config``, a slim ``.safetensors`` export in
its metadata (same key, JSON). So ``get_difftalk_inference(ckpt="exported/difftalk.safetensors")`` needs no config.
A slim export holds no first stage: it comes from ``first_stage_ckpt`` when given, else from the file named by the
config's ``model.first_stage.ckpt_path`` when it is relative and sits beside the checkpoint (the shipped synthetic
model's ``first_stage.pt``), else from that path itself (default ``models/model.ckpt``).
"""

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
    CONFIG_CKPT_KEY,
    REPO_ROOT,
    DiffTalkConfig,
    checkpoint_config,
    checkpoint_feature_kind,
    checkpoint_sampling,
    default_config_path,
    first_stage_source,
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


def first_stage_path(ckpt_path: Path, config: DiffTalkConfig, first_stage_ckpt: str | Path | None = None) -> Path:
    """Where the VQ first stage of a checkpoint without one is read from: ``first_stage_ckpt`` when given, else the
    config's ``model.first_stage.ckpt_path`` beside the checkpoint (when relative and present there), else that
    path as given (working directory, then repository root; default ``models/model.ckpt``)."""
    if first_stage_ckpt is not None:
        return resolve_path(first_stage_ckpt)
    named = Path(config.model.first_stage.ckpt_path or DEFAULT_FIRST_STAGE)
    beside = ckpt_path.parent / named
    if not named.is_absolute() and beside.is_file():
        return beside
    return resolve_path(named)


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
        config: YAML path, dict or ``DiffTalkConfig``. Default: the config stored in the checkpoint (by our trainer,
            or in the metadata of a safetensors export); a reference-format ``.ckpt`` that stores none gets
            ``configs/latent-diffusion/talking-inference.yaml``; a safetensors file that stores none is an error.
        ckpt: DiffTalk checkpoint (reference Lightning format, ours, or a safetensors export).
            Default ``checkpoints/DiffTalk/model.ckpt``.
        first_stage_ckpt: VQ first stage, needed only when ``ckpt`` holds none. Default: the config's
            ``model.first_stage.ckpt_path`` beside ``ckpt`` when present there, else that path (``models/model.ckpt``).
        device: default CUDA when available, else CPU.
        use_ema: put the EMA weights into the UNet.
        trust_checkpoint: allow full unpickling of a checkpoint that is not plain tensors (trusted files only).
    """
    ckpt_path = resolve_path(ckpt if ckpt is not None else DEFAULT_CKPT)
    if not ckpt_path.is_file():
        raise CheckpointError(
            ckpt_path,
            "DiffTalk checkpoint not found",
            hint=f"put a trained checkpoint at {DEFAULT_CKPT} (train one with talkingface train) or pass --ckpt PATH",
        )
    raw = load_checkpoint_file(ckpt_path, trust_checkpoint)
    if config is None:
        stored = checkpoint_config(raw)
        if stored is not None:
            cfg = load_config(stored)
        elif ckpt_path.suffix == ".safetensors":
            raise CheckpointError(
                ckpt_path,
                f"no '{CONFIG_CKPT_KEY}' entry in its metadata, so its config is unknown",
                hint="pass --config PATH (the YAML it was trained with) or re-export it with talkingface export",
            )
        else:
            cfg = load_config(default_config_path())
    else:
        cfg = load_config(config)
    stored_kind = checkpoint_feature_kind(raw)
    check_feature_kind(stored_kind, cfg.model.conditioning.audio_feature_kind, str(ckpt_path))
    if stored_kind is not None:
        cfg = with_audio_feature_kind(cfg, stored_kind)

    model = DiffTalkModel(cfg.model)
    model.sampling = checkpoint_sampling(raw, str(ckpt_path))  # a distilled student's sampler, else None
    fs_path = None
    if not has_first_stage(extract_state_dict(raw)):
        fs_path = first_stage_path(ckpt_path, cfg, first_stage_ckpt)
        if not fs_path.is_file():
            raise CheckpointError(
                ckpt_path,
                f"holds no first-stage weights and the VQ first stage was not found at {fs_path}",
                hint=f"put {first_stage_source(cfg.model.first_stage)} at {fs_path} or pass --first-stage-ckpt PATH",
            )
    del raw
    load_difftalk_checkpoint(model, ckpt_path, trust_checkpoint, fs_path)
    if use_ema:
        if not model.use_ema:
            raise CheckpointError(
                "model.diffusion.use_ema",
                "is false, so the checkpoint has no EMA weights to use",
                hint="pass --raw-weights",
            )
        model.model_ema.copy_to(model.model)
    model.eval().requires_grad_(False)
    model.to(pick_device(device))
    log.info("DiffTalk ready on %s (%s weights)", model.device, "EMA" if use_ema else "raw")
    if model.sampling is not None:
        log.info(
            "%s records its sampler: %s, %d steps (timesteps %s)",
            ckpt_path,
            model.sampling.sampler,
            model.sampling.steps,
            list(model.sampling.timesteps),
        )
    return model
