"""Which checkpoint a lip-sync run uses, and the warning when it is the bundled synthetic demo model.

Shared by ``talkingface lipsync`` (``demo.py``) and ``talkingface app``: ``--ckpt``, else ``DEFAULT_CKPT`` when it
exists, else the bundled synthetic demo model, which was trained on cartoon faces.
"""

from __future__ import annotations

import os
from pathlib import Path

from talkingface.demo_assets import demo_model_paths, demo_student_path
from talkingface.model.image_driven_talkingface.DiffTalk.loader import DEFAULT_CKPT, resolve_path

TRAIN_COMMAND = "python trainer/DiffTalkTrainer.py --base configs/latent-diffusion/talking.yaml -t ..."
SYNTHETIC_MODEL_WARNING = (
    "%s: the bundled synthetic demo model was trained on synthetic cartoon faces and will not look right on real "
    "faces. To get a real model, train one (`" + TRAIN_COMMAND + "`) and put it at %s, or pass --ckpt PATH."
)


def same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name one file or folder (other spellings, symlinks, hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def is_bundled_model(path: Path) -> bool:
    """``path`` is the shipped synthetic demo model (talkingface/synthetic/assets/model.safetensors) or its 4-step
    student (student4.safetensors beside it)."""
    return path.exists() and any(
        bundled.exists() and same_file(path, bundled) for bundled in (demo_model_paths()[1], demo_student_path())
    )


def resolve_checkpoint(ckpt: str | None, flag: str = "--ckpt") -> tuple[Path, str | None]:
    """The checkpoint to use and the synthetic-model warning (None unless it is the bundled demo model).

    ``ckpt``: the user's choice (None: ``DEFAULT_CKPT`` when it exists, else the bundled model); ``flag``: how the
    warning names that choice."""
    if ckpt is not None:
        path = Path(ckpt)
        warning = SYNTHETIC_MODEL_WARNING % (f"{flag} {ckpt}", DEFAULT_CKPT) if is_bundled_model(path) else None
        return path, warning
    default = resolve_path(DEFAULT_CKPT)
    if default.is_file():
        return default, None
    bundled = demo_model_paths()[1]
    return bundled, SYNTHETIC_MODEL_WARNING % (f"no checkpoint at {DEFAULT_CKPT}, using {bundled}", DEFAULT_CKPT)
