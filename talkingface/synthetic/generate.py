"""Render synthetic talking-face clips and write them as mp4 (+ landmark sidecar) and/or the training layout."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from talkingface.constants import FEATURE_DIM, FPS, NOSE_BOTTOM
from talkingface.data.layout import DatasetLayout, write_split
from talkingface.data.meta import audio_feature_spec, dataset_meta
from talkingface.demo_assets import SYNTHETIC_VIDEO_COMMENT
from talkingface.media.crop import crop_square, landmarks_to_crop, plan_crops
from talkingface.media.features import AudioFeatureBackend, make_backend
from talkingface.media.windows import smooth_windows
from talkingface.synthetic.face import (
    SKIN_TONES,
    TONE_GROUPS,
    FaceIdentity,
    draw_face,
    face_landmarks_local,
    head_pose,
    luminance,
    mouth_opening_px,
    to_frame,
    video_mouth_width,
)
from talkingface.synthetic.speech import SpeechTrack, synthesize_speech

log = logging.getLogger(__name__)

DEFAULT_FRAME_SIZE = 160
DEFAULT_CROP_SIZE = 128
SIDECAR_SUFFIX = ".landmarks.npy"
#: Extra per-clip arrays next to the mp4: mouth opening / width per frame (ground truth for benchmarks).
MOUTH_SUFFIX = ".mouth.npy"
#: Layout folder of the per-video ground truth (``mouth/<v>.npy``: opening, width per frame; ``mouth/<v>.json``: skin
#: tone bin and skin luminance); not read by training.
MOUTH_DIR = "mouth"
#: The ``source`` of the layout's meta.json (and the ``generator`` of the output folder's synthetic.json).
GENERATOR = "talkingface.synthetic"


@dataclass
class Clip:
    """One synthetic video: frames (RGB uint8), landmarks in frame pixels, the speech and the mouth state."""

    identity: FaceIdentity
    frames: np.ndarray  # (N, S, S, 3) uint8
    landmarks: np.ndarray  # (N, 68, 2) float32, frame pixels
    speech: SpeechTrack

    @property
    def n_frames(self) -> int:
        return len(self.frames)


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of clip ``index`` (1-based) of a set made with ``seed``: clips are independent of each other."""
    return np.random.default_rng([int(seed), int(index)])


def clip_skin_tone(index: int) -> int:
    """The skin tone bin of clip ``index`` (1-based): clips cycle through the bins light to dark, so any 10
    consecutive clips (a training set, and a held-out set at the end of a run) cover the whole range."""
    return (int(index) - 1) % len(SKIN_TONES)


def render_clip(
    rng: np.random.Generator,
    seconds: float,
    frame_size: int = DEFAULT_FRAME_SIZE,
    identity: FaceIdentity | None = None,
    skin_tone: int | None = None,
) -> Clip:
    """Render ``seconds`` of one identity talking (a new random identity with skin tone bin ``skin_tone``, random
    when None, unless an identity is given)."""
    from talkingface.synthetic.face import sample_identity

    identity = identity or sample_identity(rng, skin_tone)
    speech = synthesize_speech(seconds, rng)
    frames = np.empty((speech.n_frames, frame_size, frame_size, 3), dtype=np.uint8)
    landmarks = np.empty((speech.n_frames, 68, 2), dtype=np.float32)
    for i in range(speech.n_frames):
        pose = head_pose(identity, i / FPS, frame_size)
        local = face_landmarks_local(identity, float(speech.opening[i]), float(speech.width[i]))
        frames[i] = draw_face(identity, local, pose, frame_size)
        landmarks[i] = to_frame(local, pose)
    return Clip(identity, frames, landmarks, speech)


def iter_clips(
    n: int, seconds: float, seed: int, frame_size: int = DEFAULT_FRAME_SIZE, progress: bool = True
) -> Iterator[tuple[int, Clip]]:
    """Clips ``1..n`` of the set made with ``seed`` (deterministic; clip ``v`` has skin tone :func:`clip_skin_tone`)."""
    for v in tqdm(range(1, n + 1), desc="synthetic clips", unit="clip", disable=not progress):
        yield v, render_clip(clip_rng(seed, v), seconds, frame_size, skin_tone=clip_skin_tone(v))


def write_clip_video(clip: Clip, path: str | Path, overwrite: bool = True) -> Path:
    """H.264 + AAC mp4 of the clip, tagged as generated (``comment``: :data:`SYNTHETIC_VIDEO_COMMENT`), plus
    ``<stem>.landmarks.npy`` (N, 68, 2) and ``<stem>.mouth.npy`` (N, 2)."""
    from talkingface.inference.writer import VideoWriter

    path = Path(path)
    tags = {"comment": SYNTHETIC_VIDEO_COMMENT}
    audio, rate = clip.speech.audio, clip.speech.sample_rate
    with VideoWriter(path, FPS, audio, rate, overwrite=overwrite, crf=18, metadata=tags) as w:
        for frame in clip.frames:
            w.write(frame)
    np.save(sidecar_path(path), clip.landmarks)
    np.save(path.with_name(path.stem + MOUTH_SUFFIX), np.column_stack([clip.speech.opening, clip.speech.width]))
    return path


def sidecar_path(video: str | Path) -> Path:
    """``clip.mp4`` -> ``clip.landmarks.npy``."""
    video = Path(video)
    return video.with_name(video.stem + SIDECAR_SUFFIX)


def clip_crops(clip: Clip, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Face crops as the preprocessing makes them (smoothed boxes, 1.8 x landmark box) and landmarks in crop pixels."""
    boxes = plan_crops(clip.landmarks)
    crops = np.stack([crop_square(f, b, size) for f, b in zip(clip.frames, boxes, strict=True)])
    lms = np.stack([landmarks_to_crop(lm, b, size) for lm, b in zip(clip.landmarks, boxes, strict=True)])
    return crops, lms


def clip_audio_windows(clip: Clip, backend: AudioFeatureBackend | str = "mel") -> np.ndarray:
    """``(N, 8, 16, D)`` audio_smooth windows of the clip's speech (the project's feature backend, or its name)."""
    backend = make_backend(backend) if isinstance(backend, str) else backend
    return smooth_windows(backend.frame_windows(clip.speech.audio, clip.n_frames, Path("synthetic")))


def write_layout_video(
    root: Path, number: int, clip: Clip, size: int, backend: AudioFeatureBackend | str = "mel"
) -> None:
    """Write one clip's frames into the training layout (``images/``, ``landmarks/``, ``audio_smooth/``)."""
    crops, lms = clip_crops(clip, size)
    windows = clip_audio_windows(clip, backend)
    layout = DatasetLayout(root)
    layout.make_folders()
    for i in range(clip.n_frames):
        layout.write_frame(number, i, crops[i])
        layout.write_landmarks(number, i, lms[i])
        layout.write_audio(number, i, windows[i])
    (root / MOUTH_DIR).mkdir(parents=True, exist_ok=True)
    np.save(root / MOUTH_DIR / f"{number}.npy", np.column_stack([clip.speech.opening, clip.speech.width]))
    (root / MOUTH_DIR / f"{number}.json").write_text(json.dumps(skin_info(clip.identity)) + "\n")


def skin_info(identity: FaceIdentity) -> dict[str, float | int]:
    """``{"skin_tone": bin 0..9, "skin_luminance": Y in [0, 1]}`` of an identity (per-video metadata)."""
    return {"skin_tone": identity.skin_tone, "skin_luminance": round(float(luminance(identity.skin)), 4)}


def write_layout_meta(
    root: Path,
    counts: list[int],
    size: int,
    test_videos: list[int],
    backend_kind: str,
    split_dir: Path,
    feature_dim: int = FEATURE_DIM,
) -> None:
    """``meta.json``, ``data.txt`` and the split lists (split by video), as the preprocessing writes them."""
    layout = DatasetLayout(root, split_dir)
    settings = {"fps": FPS, "image_size": int(size), "audio_feature": audio_feature_spec(backend_kind, feature_dim)}
    videos = {str(v): {"source": f"synthetic_{v:03d}", "status": "done", "frames": n} for v, n in enumerate(counts, 1)}
    layout.write_meta(dataset_meta(settings, videos, source=GENERATOR))
    layout.write_data_txt(counts)
    numbers = range(1, len(counts) + 1)
    write_split(layout.train_list, [v for v in numbers if v not in test_videos], counts)
    write_split(layout.test_list, [v for v in numbers if v in test_videos], counts)


def mouth_truth(root: Path, video: int) -> np.ndarray:
    """``(N, 2)`` ground-truth mouth opening (0..1) and width factor per frame of a layout video."""
    return np.load(Path(root) / MOUTH_DIR / f"{video}.npy")


def video_skin(root: Path, video: int) -> dict[str, float | int]:
    """The :func:`skin_info` of a layout video (``mouth/<v>.json``)."""
    return json.loads((Path(root) / MOUTH_DIR / f"{video}.json").read_text())


def tone_group(skin_tone: int) -> str:
    """``"light"``, ``"medium"`` or ``"dark"``: the :data:`~talkingface.synthetic.face.TONE_GROUPS` group of a bin."""
    return next(name for name, bins in TONE_GROUPS.items() if skin_tone in bins)


def measure_ceiling_by_tone(
    seed: int, seconds: float, frame_size: int = DEFAULT_FRAME_SIZE, crop_size: int = DEFAULT_CROP_SIZE
) -> dict[str, float]:
    """The ceiling of the pixel measure per skin-tone group: Pearson r between :func:`mouth_opening_px` on
    ground-truth face crops (as the layout stores them) and the true opening, pooled over the clips of each group.

    Renders clips ``1..10`` of the set made with ``seed`` (one per skin tone bin, as :func:`iter_clips` does).
    """
    measured: dict[str, list[float]] = {g: [] for g in TONE_GROUPS}
    truth: dict[str, list[float]] = {g: [] for g in TONE_GROUPS}
    for v in range(1, len(SKIN_TONES) + 1):
        clip = render_clip(clip_rng(seed, v), seconds, frame_size, skin_tone=clip_skin_tone(v))
        crops, lms = clip_crops(clip, crop_size)
        width = video_mouth_width(lms)
        group = tone_group(clip.identity.skin_tone)
        measured[group] += [mouth_opening_px(c, lm[NOSE_BOTTOM], width) for c, lm in zip(crops, lms, strict=True)]
        truth[group] += [float(o) for o in clip.speech.opening]
    return {g: float(np.corrcoef(measured[g], truth[g])[0, 1]) for g in TONE_GROUPS}
