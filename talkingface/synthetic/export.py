"""The shipped synthetic demo model: slim DiffTalk weights + its small first stage + config, in fp16.

``model.safetensors`` carries its config in its metadata (``difftalk_config``, JSON) and names ``first_stage.pt``,
the file beside it, as its first stage; so ``get_difftalk_inference(ckpt=".../assets/model.safetensors")`` and
``python demo.py --ckpt .../assets/model.safetensors --video V --audio A --out O`` need no other argument.
``config.yaml`` is the same config, for reading. ``student4.safetensors`` is that model distilled to 4 DDIM steps
(the trainer's distillation mode); it shares ``first_stage.pt`` and records its sampler (``difftalk_sampling``).
Where these files lie is :mod:`talkingface.demo_assets` (re-exported here).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from talkingface.demo_assets import (
    ASSETS_DIR,
    CONFIG_FILE,
    DEMO_MODEL_NOTE,
    FIRST_STAGE_FILE,
    METRICS_FILE,
    MODEL_FILE,
    STUDENT_FILE,
    demo_model_paths,
    demo_student_path,
)
from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import export_safetensors
from talkingface.model.image_driven_talkingface.DiffTalk.config import CONFIG_CKPT_KEY, config_to_dict, save_config
from talkingface.paths import atomic_output
from talkingface.training.config import TrainingConfig, load_training_config

__all__ = [
    "ASSETS_DIR",
    "demo_metadata",
    "demo_model_paths",
    "demo_student_path",
    "export_demo_model",
    "export_demo_student",
]

log = logging.getLogger(__name__)


def demo_metadata(config: TrainingConfig) -> dict[str, str]:
    """safetensors metadata of the demo model: its whole config as JSON, and a note."""
    return {
        "format": "pt",
        "note": f"{DEMO_MODEL_NOTE} (fp16 storage)",  # the mark of the demo model (talkingface.demo_assets)
        CONFIG_CKPT_KEY: json.dumps(config_to_dict(config), sort_keys=True),
    }


def _to_half_safetensors(path: Path, metadata: dict[str, str]) -> None:
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in load_file(str(path)).items()}
    with atomic_output(path) as tmp:
        save_file(sd, str(tmp), metadata=metadata)


def export_demo_model(model: torch.nn.Module, first_stage_path: Path, folder: Path, metrics: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` (EMA UNet + encoders, config in its metadata), ``first_stage.pt``, ``config.yaml``
    and ``metrics.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = load_training_config({"model": json.loads(json.dumps(_model_dict(model)))})
    cfg.model.first_stage.ckpt_path = FIRST_STAGE_FILE  # relative: the loader finds it beside model.safetensors
    export_safetensors(model, folder / MODEL_FILE, slim=True)
    _to_half_safetensors(folder / MODEL_FILE, demo_metadata(cfg))
    fs = torch.load(first_stage_path, map_location="cpu", weights_only=True)
    torch.save({"state_dict": {k: v.half() for k, v in fs["state_dict"].items()}}, folder / FIRST_STAGE_FILE)
    save_config(cfg, folder / CONFIG_FILE)
    keep = {k: v for k, v in metrics.items() if not isinstance(v, list) or k == "correlation_per_video"}
    (folder / METRICS_FILE).write_text(json.dumps(keep, indent=2) + "\n")
    log.info("exported the synthetic demo model to %s", folder)
    return folder


def export_demo_student(slim: Path, folder: Path = ASSETS_DIR, name: str = STUDENT_FILE) -> Path:
    """Ship a distilled student's slim export (``difftalk_ema.safetensors`` of a distillation run of the demo model)
    beside the demo model: fp16, its first stage pointed at the demo model's ``first_stage.pt`` (the student copies
    its teacher's), its recorded sampler kept."""
    from safetensors import safe_open

    from talkingface.model.image_driven_talkingface.DiffTalk.config import SAMPLING_CKPT_KEY

    slim, folder = Path(slim), Path(folder)
    with safe_open(str(slim), framework="pt") as f:
        meta = dict(f.metadata() or {})
    if CONFIG_CKPT_KEY not in meta or SAMPLING_CKPT_KEY not in meta:
        raise ValueError(f"{slim}: not a distilled student's slim export (no {CONFIG_CKPT_KEY} / {SAMPLING_CKPT_KEY})")
    # the model only, as the demo model (the run's data and train sections are not the demo's)
    cfg = load_training_config({"model": json.loads(meta[CONFIG_CKPT_KEY])["model"]})
    cfg.model.first_stage.ckpt_path = FIRST_STAGE_FILE
    out = folder / name
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in load_file(str(slim)).items()}
    metadata = demo_metadata(cfg)
    metadata["note"] = f"{DEMO_MODEL_NOTE} distilled to few steps (fp16 storage)"
    metadata[SAMPLING_CKPT_KEY] = meta[SAMPLING_CKPT_KEY]
    with atomic_output(out) as tmp:
        save_file(sd, str(tmp), metadata=metadata)
    log.info("shipped the distilled student %s as %s", slim, out)
    return out


def _model_dict(model: torch.nn.Module) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(model.config), resolve=True)  # type: ignore[return-value]
