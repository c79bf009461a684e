"""The no-argument demo: the shipped synthetic model lip-syncs a synthetic face to new synthetic speech.

The sample media are generated on the fly by the same code as the training data (seeded, a few seconds, no
download); face landmarks come from the generator's sidecar instead of dlib (a cartoon face is not a photo).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from talkingface.constants import DEMO_STEPS
from talkingface.demo_assets import ASSETS_DIR, METRICS_FILE, demo_model_paths, demo_student_path
from talkingface.synthetic.face import sample_identity
from talkingface.synthetic.generate import render_clip, sidecar_path, write_clip_video

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


def run_synthetic_demo(
    out: str | Path = DEFAULT_OUT,
    seconds: float | None = None,
    steps: int | None = None,
    overwrite: bool = True,
    device: str | None = None,
    progress: bool = True,
    stream_chunk_ms: float | None = None,
    stream_realtime: bool = True,
    student: bool = False,
) -> Path:
    """Write a lip-synced mp4 with the shipped synthetic model (offline, CPU, about a minute).

    ``stream_chunk_ms``: stream the speech in chunks of this length instead (``talkingface lipsync --stream``), at
    the pace of the wall clock when ``stream_realtime``; the stream makes frames in batches of 1. ``student``: the
    shipped 4-step student of the demo model (``student4.safetensors``, its recorded DDIM 4 steps) instead."""
    from talkingface.inference import LipSyncOptions, LipSyncPipeline
    from talkingface.inference.stream import stream_file
    from talkingface.inference.writer import check_output
    from talkingface.model.image_driven_talkingface.DiffTalk import CheckpointError, get_difftalk_inference

    check_output(out, overwrite)  # before the model loads and the clip is generated
    seconds = float(os.environ.get(ENV_SECONDS, seconds or DEFAULT_SECONDS))
    steps = int(os.environ.get(ENV_STEPS, steps or DEFAULT_STEPS))
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
    model = get_difftalk_inference(config, ckpt, first_stage, device=device or "cpu")
    n_params = sum(p.numel() for p in model.trainable_parameters())
    measured = _measured_correlation(ckpt.parent, STUDENT_METRICS if student else None)
    log.warning(BANNER, f"{n_params / 1e6:.1f} M", measured)
    with tempfile.TemporaryDirectory(prefix="talkingface-demo-") as tmp:
        video, speech = make_sample_media(Path(tmp), seconds)
        log.info("making %s: a generated synthetic face speaking the audio of another generated clip", out)
        batch_size = 25 if stream_chunk_ms is None else 1
        pipe = LipSyncPipeline(
            model,
            options=LipSyncOptions(
                steps=None if student else steps,  # the student: the sampler and steps it records
                sampler=None if student else "dpm++",
                batch_size=batch_size,
                crop_size=DEMO_CROP_SIZE,
            ),
            detector=SidecarDetector(np.load(sidecar_path(video))),  # type: ignore[arg-type]
            model_source=str(ckpt),
        )
        if stream_chunk_ms is not None:
            stream_file(
                pipe, video, speech, out, chunk_ms=stream_chunk_ms, realtime=stream_realtime, overwrite=overwrite
            )
        else:  # the pipeline logs "wrote <out>" with its figures
            pipe.run(video, speech, out, overwrite=overwrite, progress=progress)
    return Path(out)
