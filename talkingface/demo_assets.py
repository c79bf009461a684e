"""Where the shipped synthetic demo model lies: ``talkingface/synthetic/assets/`` and the names of its files.

Below inference and the synthetic package alike: the lip-sync commands pick the demo model and warn about it
(``talkingface.inference.model_choice``), the synthetic package writes and runs it (``talkingface.synthetic.export``,
``talkingface.synthetic.demo``). This module imports nothing of the project.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent / "synthetic" / "assets"
#: Slim DiffTalk weights in fp16, the config in their metadata, ``first_stage.pt`` named as their first stage.
MODEL_FILE = "model.safetensors"
#: The demo model distilled to 4 DDIM steps (trajectory distillation; it records its sampler), beside it.
STUDENT_FILE = "student4.safetensors"
FIRST_STAGE_FILE = "first_stage.pt"
#: The model's config, for reading (the same as in its metadata).
CONFIG_FILE = "config.yaml"
#: The held-out figures of the model and of its student.
METRICS_FILE = "metrics.json"


def demo_model_paths(folder: Path = ASSETS_DIR) -> tuple[Path, Path, Path]:
    """``(config, checkpoint, first stage)`` of the shipped synthetic model."""
    return folder / CONFIG_FILE, folder / MODEL_FILE, folder / FIRST_STAGE_FILE


def demo_student_path(folder: Path = ASSETS_DIR) -> Path:
    """The shipped 4-step student of the synthetic demo model."""
    return folder / STUDENT_FILE
