"""Where the shipped synthetic demo model lies (``talkingface/synthetic/assets/``, the names of its files), and the
marks that tell its files and the synthetic generator's clips from others, wherever they lie and whatever their names.

Below inference and the synthetic package alike: the lip-sync commands pick the demo model and warn about it
(``talkingface.inference.model_choice``), the synthetic package writes and runs it (``talkingface.synthetic.export``,
``talkingface.synthetic.demo``) and writes the clips (``talkingface.synthetic.generate``). This module imports nothing
of the project.
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
#: How the ``note`` entry of the safetensors metadata of the demo model and of its student begins: the mark of the
#: demo model, which a copy under another name keeps.
DEMO_MODEL_NOTE = "synthetic demo model"
#: The ``comment`` tag of the container the synthetic generator writes its clips in (mp4, mov, mkv).
SYNTHETIC_VIDEO_COMMENT = "talkingface.synthetic: a generated cartoon face"


def demo_model_paths(folder: Path = ASSETS_DIR) -> tuple[Path, Path, Path]:
    """``(config, checkpoint, first stage)`` of the shipped synthetic model."""
    return folder / CONFIG_FILE, folder / MODEL_FILE, folder / FIRST_STAGE_FILE


def demo_student_path(folder: Path = ASSETS_DIR) -> Path:
    """The shipped 4-step student of the synthetic demo model."""
    return folder / STUDENT_FILE
