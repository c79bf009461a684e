"""Slim export for inference-only use: EMA UNet + condition encoders + config, as safetensors.

    talkingface export logs/<run>/checkpoints/last.ckpt exported/difftalk.safetensors
    python -m talkingface.training.export logs/<run>/checkpoints/last.ckpt exported/difftalk.safetensors  # the same

Writes ``difftalk.safetensors`` (the whole run config, feature kind included, as JSON in its metadata under
``difftalk_config``) and ``difftalk.yaml`` (the same config, for reading) next to it. The safetensors file is
self-contained but for the VQ first stage: ``get_difftalk_inference(ckpt="exported/difftalk.safetensors")`` or
``python demo.py --ckpt exported/difftalk.safetensors --video V --audio A --out O`` need no config. The first stage
comes from the config's ``model.first_stage.ckpt_path`` (beside the export when a relative path names a file
there, else as given: ``models/model.ckpt``), or from ``--first-stage-ckpt``.

An existing output (the ``.safetensors`` or its ``.yaml``) is replaced only with ``--overwrite``, and never when it
is the input checkpoint itself (also through a symbolic link, ``..`` or a hard link). Both files are written to a
temporary file beside them and renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import (
    CheckpointError,
    export_safetensors,
    load_checkpoint_file,
    load_difftalk_checkpoint,
)
from talkingface.model.image_driven_talkingface.DiffTalk.config import (
    CONFIG_CKPT_KEY,
    SAMPLING_CKPT_KEY,
    checkpoint_config,
    checkpoint_feature_kind,
    checkpoint_sampling,
    config_to_dict,
    save_config,
    with_audio_feature_kind,
)
from talkingface.paths import atomic_output, same_file
from talkingface.training.config import TrainingConfig, load_training_config
from talkingface.training.module import LatentDiffusion

log = logging.getLogger(__name__)


def module_config(module: Any) -> dict[str, Any]:
    """The whole run config of a module: its ``run_config``, else (a module built without one) its model config
    under ``model`` with the defaults for the rest."""
    run_config = getattr(module, "run_config", None)
    if run_config is not None:
        return run_config
    return config_to_dict(TrainingConfig(model=module.config))


def slim_metadata(module: Any) -> dict[str, str]:
    """safetensors metadata (str -> str): the whole config as JSON under ``difftalk_config``, and the module's
    recorded sampler (a distilled student's sampler, steps, exact timesteps, method, teacher) under
    ``difftalk_sampling`` when it has one."""
    metadata = {CONFIG_CKPT_KEY: json.dumps(module_config(module), sort_keys=True)}
    sampling = getattr(module, "sampling", None)
    if sampling is not None:
        metadata[SAMPLING_CKPT_KEY] = sampling.to_json()
    return metadata


def export_slim(module: Any, path: str | Path) -> Path:
    """Write ``path`` (safetensors, EMA weights, config in its metadata) and the config as ``path`` with suffix
    ``.yaml``."""
    path = Path(path)
    out = export_safetensors(module, path, slim=True, metadata=slim_metadata(module))
    yaml = path.with_suffix(".yaml")
    with atomic_output(yaml) as tmp:
        save_config(load_training_config(module_config(module)), tmp)
    log.info("slim export written to %s", out)
    return out


def check_export_output(ckpt: str | Path, out: str | Path, overwrite: bool = False) -> None:
    """Fail (``CheckpointError`` naming the file) when writing the export ``out`` (and its ``.yaml``) would replace
    the checkpoint ``ckpt`` (other spellings, symbolic links, hard links), a folder, or, without ``overwrite``, an
    existing file."""
    out = Path(out)
    for path in (out, out.with_suffix(".yaml")):
        if same_file(path, ckpt):
            raise CheckpointError(f"{path}: is the checkpoint being exported ({ckpt}); write the export elsewhere")
        if path.is_dir():
            raise CheckpointError(f"{path}: is a folder; give the export a file name (.safetensors)")
        if os.path.lexists(path) and not overwrite:
            raise CheckpointError(f"{path}: exists; pass --overwrite to replace it")


def export_checkpoint(
    ckpt: str | Path, out: str | Path, trust_checkpoint: bool = False, overwrite: bool = False
) -> Path:
    """Slim-export a trainer checkpoint (it must hold ``difftalk_config``, as every trainer checkpoint does).

    ``trust_checkpoint``: allow a file that needs full unpickling (it can run code: only for files you trust).
    ``overwrite``: replace an existing export (never ``ckpt`` itself: see :func:`check_export_output`).
    """
    check_export_output(ckpt, out, overwrite)
    raw = load_checkpoint_file(ckpt, trust_checkpoint)
    stored = checkpoint_config(raw)
    if stored is None:
        raise CheckpointError(f"{ckpt}: no '{CONFIG_CKPT_KEY}' entry: it was not written by the DiffTalk trainer")
    cfg = load_training_config(stored)
    kind = checkpoint_feature_kind(raw)  # older checkpoints also carry it at the top level
    if kind is not None:
        cfg = with_audio_feature_kind(cfg, kind)
    sampling = checkpoint_sampling(raw, str(ckpt))
    del raw
    model = LatentDiffusion(cfg.model, run_config=config_to_dict(cfg))
    model.sampling = sampling
    load_difftalk_checkpoint(model, ckpt, trust_checkpoint)
    return export_slim(model, out)


if __name__ == "__main__":  # the older spelling of ``talkingface export``
    from talkingface.cli_support import hand_over

    hand_over("export")
