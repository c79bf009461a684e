"""The pieces of the no-argument demo (``talkingface lipsync`` without ``--video``): the shipped synthetic model and
the sample media it animates, a synthetic face and new synthetic speech.

The sample media are generated on the fly by the same code as the training data (seeded, a few seconds, no
download); face landmarks come from the generator's sidecar instead of dlib (a cartoon face is not a photo). The
command (``talkingface lipsync`` without ``--video``) wires them into the lip-sync pipeline as it wires a video.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from talkingface.constants import DEMO_STEPS
from talkingface.demo_assets import ASSETS_DIR, METRICS_FILE, demo_model_paths, demo_student_path
from talkingface.errors import TalkingFaceError
from talkingface.synthetic.face import sample_identity
from talkingface.synthetic.generate import render_clip, sidecar_path, write_clip_video

if TYPE_CHECKING:
    from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("synthetic_demo.mp4")
DEMO_SEED = 20_231_105  # not a training seed: the demo identity and speech are unseen
ENV_SECONDS = "TALKINGFACE_DEMO_SECONDS"
ENV_STEPS = "TALKINGFACE_DEMO_STEPS"
DEFAULT_SECONDS = 4.0
DEFAULT_STEPS = DEMO_STEPS
DEMO_CROP_SIZE = 128  # the saved crop side of the synthetic training layout
#: The 4-step student's figures in metrics.json.
STUDENT_METRICS = "student4"
BANNER = (
    "SYNTHETIC DEMO MODEL: a %s-parameter DiffTalk trained on cartoon faces by benchmarks/learnability.py "
    "(held-out mouth-opening correlation r = %s, see its metrics.json); it only animates synthetic faces. "
    "For real videos train a model (docs/training.md) and run "
    "`python demo.py --video person.mp4 --audio speech.wav --out result.mp4 --ckpt checkpoints/DiffTalk/model.ckpt`."
)


class SidecarDetector:
    """A landmark 'detector' that returns precomputed ``(N, 68, 2)`` landmarks, one frame per call, in order.

    Stands in for dlib in ``LipSyncPipeline(detector=...)`` for one decoding pass of the video they belong to.
    """

    def __init__(self, landmarks: np.ndarray) -> None:
        self.landmarks = np.asarray(landmarks, dtype=np.float32)
        self.calls = 0

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        i = self.calls
        self.calls += 1
        return self.landmarks[i] if i < len(self.landmarks) else None


def _measured_correlation(folder: Path, entry: str | None = None) -> str:
    """The held-out r in ``metrics.json`` (``entry``: a sub-entry such as the student's ``student4``)."""
    try:
        metrics = json.loads((folder / METRICS_FILE).read_text())
        return f"{float((metrics[entry] if entry else metrics)['correlation']):.2f}"
    except (OSError, ValueError, KeyError, TypeError):
        return "not recorded"


def make_sample_media(folder: Path, seconds: float, seed: int = DEMO_SEED) -> tuple[Path, Path]:
    """A portrait clip (identity A) and a driving speech clip (identity B, different speech); returns their paths."""
    rng_a, rng_b = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    video = write_clip_video(render_clip(rng_a, seconds, identity=sample_identity(rng_a)), folder / "portrait.mp4")
    speech = write_clip_video(render_clip(rng_b, seconds), folder / "speech.mp4")
    return video, speech


def demo_inputs(
    folder: Path, seconds: float, out: str | Path, speech: str | Path | None = None
) -> tuple[Path, Path, Path]:
    """The demo's inputs, made in ``folder``: a generated portrait clip, the speech it is to speak (``speech``, else
    the speech of another generated clip) and the portrait's landmarks file (the generator's sidecar: no dlib on a
    cartoon face). Logs what the demo makes into ``out``."""
    video, generated = make_sample_media(folder, seconds)
    said = speech if speech is not None else "the audio of another generated clip"
    log.info("making %s: a generated synthetic face speaking %s", out, said)
    return video, Path(speech) if speech is not None else generated, sidecar_path(video)


def _env_number(name: str, default: float, kind: type[int] | type[float]) -> float:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        number = kind(value)
    except ValueError:
        number = 0
    if not (number > 0 and math.isfinite(number)):
        raise TalkingFaceError(name, f"must be a {'whole ' if kind is int else ''}number above 0, got {value!r}")
    return number


def demo_seconds() -> float:
    """Length of the generated clips: ``TALKINGFACE_DEMO_SECONDS``, else :data:`DEFAULT_SECONDS`."""
    return float(_env_number(ENV_SECONDS, DEFAULT_SECONDS, float))


def demo_steps() -> int:
    """The demo model's sampler steps when ``--steps`` is not given: ``TALKINGFACE_DEMO_STEPS``, else
    :data:`DEFAULT_STEPS`."""
    return int(_env_number(ENV_STEPS, DEFAULT_STEPS, int))


def load_demo_model(
    student: bool = False, device: str | None = None, use_ema: bool = True
) -> tuple[DiffTalkModel, Path]:
    """The shipped synthetic model (``student``: its 4-step student, which records its DDIM sampler) on ``device``
    (default: the CPU), and its path; logs the banner that says what it is and what it can do."""
    from talkingface.model.image_driven_talkingface.DiffTalk import CheckpointError, get_difftalk_inference

    config, ckpt, first_stage = demo_model_paths()
    if student:
        config, ckpt = None, demo_student_path()  # its config travels in its metadata
    if not ckpt.is_file():
        raise CheckpointError(
            ckpt,
            "the synthetic demo model is missing",
            hint=f"rebuild it with python benchmarks/learnability.py --out runs/learnability --variants real --export "
            f"{ASSETS_DIR}",
        )
    model = get_difftalk_inference(config, ckpt, first_stage, device=device or "cpu", use_ema=use_ema)
    n_params = sum(p.numel() for p in model.trainable_parameters())
    measured = _measured_correlation(ckpt.parent, STUDENT_METRICS if student else None)
    log.warning(BANNER, f"{n_params / 1e6:.1f} M", measured)
    return model, ckpt
