"""Which checkpoint a lip-sync run uses, and the warning when it is the bundled synthetic demo model.

Shared by ``talkingface lipsync`` (``demo.py``) and ``talkingface app``: ``--ckpt``, else ``DEFAULT_CKPT`` when it
exists, else the bundled synthetic demo model, which was trained on cartoon faces.

What a file is decides, not how its path is spelled: the demo model (and its student) carry a mark in their
safetensors metadata, which a copy under another name keeps; the synthetic generator tags the clips it writes (see
:mod:`talkingface.demo_assets`). The warning is given when the demo model is used on any other video.
"""

from __future__ import annotations

from pathlib import Path

from talkingface.demo_assets import DEMO_MODEL_NOTE, SYNTHETIC_VIDEO_COMMENT, demo_model_paths
from talkingface.model.image_driven_talkingface.DiffTalk.loader import DEFAULT_CKPT, resolve_path
from talkingface.paths import same_file

__all__ = [
    "SYNTHETIC_MODEL_WARNING",
    "TRAIN_COMMAND",
    "is_bundled_model",
    "is_synthetic_video",
    "resolve_checkpoint",
    "same_file",
]

TRAIN_COMMAND = "python trainer/DiffTalkTrainer.py --base configs/latent-diffusion/talking.yaml -t ..."
SYNTHETIC_MODEL_WARNING = (
    "%s: the bundled synthetic demo model was trained on synthetic cartoon faces and will not look right on real "
    "faces. To get a real model, train one (`" + TRAIN_COMMAND + "`) and put it at %s, or pass --ckpt PATH."
)


def is_bundled_model(path: str | Path) -> bool:
    """``path`` holds the shipped synthetic demo model or its 4-step student, whatever its name or spelling (a
    relative path is found as the loader finds it: working directory, then repository root): its safetensors
    metadata ``note`` begins with :data:`~talkingface.demo_assets.DEMO_MODEL_NOTE`."""
    from safetensors import safe_open

    resolved = resolve_path(path)
    if not resolved.is_file():
        return False
    try:
        with safe_open(str(resolved), framework="pt") as f:
            note = (f.metadata() or {}).get("note", "")
    except Exception:  # noqa: BLE001 - not a safetensors file (a trainer .ckpt, anything else): not the demo model
        return False
    return note.startswith(DEMO_MODEL_NOTE)


def is_synthetic_video(path: str | Path) -> bool:
    """``path`` is a clip of the synthetic generator (its container's ``comment`` tag says so); False for anything
    else, an unreadable file included."""
    import av

    try:
        with av.open(str(path)) as container:
            return container.metadata.get("comment") == SYNTHETIC_VIDEO_COMMENT
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        return False


def resolve_checkpoint(
    ckpt: str | None, flag: str = "--ckpt", video: str | Path | None = None
) -> tuple[Path, str | None]:
    """The checkpoint to use and the synthetic-model warning (None unless it is the bundled demo model and
    ``video`` is not a synthetic clip, or is not known).

    ``ckpt``: the user's choice (None: ``DEFAULT_CKPT`` when it exists, else the bundled model); ``flag``: how the
    warning names that choice; ``video``: the video it will animate."""
    if ckpt is not None:
        path, named = Path(ckpt), f"{flag} {ckpt}"
    elif resolve_path(DEFAULT_CKPT).is_file():
        path, named = resolve_path(DEFAULT_CKPT), f"{DEFAULT_CKPT}"
    else:
        path = demo_model_paths()[1]
        named = f"no checkpoint at {DEFAULT_CKPT}, using {path}"
    if not is_bundled_model(path) or (video is not None and is_synthetic_video(video)):
        return path, None
    return path, SYNTHETIC_MODEL_WARNING % (named, DEFAULT_CKPT)
