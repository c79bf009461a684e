"""Mouth sharpness of synthetic DiffTalk models of different image sides, on the same held-out frames.

Each model generates the held-out identities' frames at its own side through the lip-sync pipeline's frame path
(:func:`~talkingface.synthetic.learn.generate_heldout`: the pipeline's reference frame, frame inputs and uint8
conversion, EMA weights); every result is then resized with the pipeline's resampling (PIL bicubic) to the largest
side among the models and compared there with the ground truth at that side: PSNR/SSIM of the mouth box
(:func:`~talkingface.metrics.batch.batch_metrics` with the landmarks at that side). So a 64 px model's mouth, upsampled,
meets a 128 px model's mouth on the 128 px truth. Alongside: the pixel measure's Pearson r of each model (on its own
frames, at its own side), the ground truth through each first stage alone (resized alike: what the decoder can give),
the ground truth itself at each smaller side, resized up (what that side loses by construction), and the seconds per
frame each model took to generate.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from talkingface.data.dataset import TalkDataset
from talkingface.inference.inputs import resize_bicubic, to_unit
from talkingface.inference.pipeline import to_uint8
from talkingface.metrics.batch import batch_metrics
from talkingface.model.image_driven_talkingface.DiffTalk.model import DiffTalkModel
from talkingface.model.image_driven_talkingface.DiffTalk.plan import DEMO_STEPS, DPM_SOLVER_PP
from talkingface.synthetic.face import video_mouth_width
from talkingface.synthetic.generate import mouth_truth
from talkingface.synthetic.learn import generate_heldout, measure_openings, pearson, video_skin_tone

#: Frames per metric batch (bounds memory at large sides).
_METRIC_BATCH = 25


@dataclass
class MouthScores:
    """One image source against the ground truth at the comparison side: mean mouth PSNR (dB) and SSIM."""

    mouth_psnr: float
    mouth_ssim: float


@dataclass
class VideoSharpness:
    """One held-out identity: per model (by name) the pixel measure's r and the mouth scores of its frames, of the
    ground truth through its first stage, and of the ground truth at its side (all at the comparison side)."""

    video: int
    skin_tone: int | None
    frames: int
    correlation: dict[str, float] = field(default_factory=dict)
    generated: dict[str, MouthScores] = field(default_factory=dict)
    first_stage: dict[str, MouthScores] = field(default_factory=dict)
    truth_at_side: dict[str, MouthScores] = field(default_factory=dict)  # models of a smaller side only


@dataclass
class SharpnessResult:
    side: int  # the comparison side (the largest model side)
    sides: dict[str, int]  # each model's image side
    videos: list[VideoSharpness]
    correlation: dict[str, float]  # pooled over the held-out frames
    generated: dict[str, MouthScores]  # frame-weighted means over the videos
    first_stage: dict[str, MouthScores]
    truth_at_side: dict[str, MouthScores]  # the models of a smaller side only
    seconds_per_frame: dict[str, float]  # generation wall time per frame (frame inputs, encodes, sampling, decode)
    frames: int


def _upsample(images: np.ndarray, side: int) -> np.ndarray:
    """uint8 ``(B, s, s, 3)`` -> ``(B, side, side, 3)`` with the pipeline's resampling (unchanged at ``side``)."""
    return np.stack([resize_bicubic(im, side) for im in images])


def mouth_scores(images: np.ndarray, truth: np.ndarray, landmarks: np.ndarray) -> tuple[float, float]:
    """Summed (not averaged) mouth PSNR and SSIM of uint8 ``(B, S, S, 3)`` images against the truth, landmarks
    ``(B, 68, 2)`` in pixels of that side; sums, so callers can weigh batches by their frames."""
    psnr_sum = ssim_sum = 0.0
    for i in range(0, len(images), _METRIC_BATCH):
        sl = slice(i, i + _METRIC_BATCH)
        m = batch_metrics(
            torch.from_numpy(to_unit(images[sl])), torch.from_numpy(to_unit(truth[sl])), landmarks=landmarks[sl]
        )
        n = len(images[sl])
        psnr_sum += m["mouth_psnr"] * n
        ssim_sum += m["mouth_ssim"] * n
    return psnr_sum, ssim_sum


@torch.no_grad()
def compare_sharpness(
    models: Mapping[str, DiffTalkModel],
    root: str | Path,
    split: str | Path,
    max_frames_per_video: int = 100,
    sample_steps: int | None = DEMO_STEPS,
    batch_size: int = 50,
    seed: int = 0,
    progress: bool = True,
    sampler: str | None = DPM_SOLVER_PP,
) -> SharpnessResult:
    """Generate the held-out frames of ``split`` with every model (each at its own side, one generator per model
    seeded with ``seed``, as :func:`~talkingface.synthetic.learn.evaluate_heldout` draws them) and score their
    mouths at the largest side (see the module docstring). The dataset must be saved at that side or more."""
    if not models:
        raise ValueError("compare_sharpness needs at least one model")
    root = Path(root)
    sides = {name: int(m.config.first_stage.resolution) for name, m in models.items()}
    side = max(sides.values())
    top = next(name for name, s in sides.items() if s == side)
    datasets = {name: TalkDataset(root, split, image_size=s) for name, s in sides.items()}
    generators = {name: torch.Generator().manual_seed(seed) for name in models}
    by_video: dict[int, list[int]] = {}
    for i, v in enumerate(datasets[top].videos):
        by_video.setdefault(int(v), []).append(i)
    seconds = dict.fromkeys(models, 0.0)
    sums: dict[str, dict[str, list[float]]] = {k: {} for k in ("generated", "first_stage", "truth_at_side")}
    opening_true: list[float] = []
    opening_gen: dict[str, list[float]] = {name: [] for name in models}
    videos: list[VideoSharpness] = []
    for v, rows in tqdm(by_video.items(), desc="sharpness", disable=not progress, leave=False):
        rows = rows[:max_frames_per_video]
        truth_open = mouth_truth(root, v)[:, 0]
        out: dict[str, dict[str, np.ndarray]] = {}
        for name, model in models.items():
            t0 = time.perf_counter()
            with model.ema_scope():
                batches = list(
                    generate_heldout(model, datasets[name], rows, generators[name], sample_steps, batch_size, sampler)
                )
            seconds[name] += time.perf_counter() - t0
            out[name] = {
                "generated": np.concatenate([to_uint8(b.frames) for b in batches]),
                "first_stage": np.concatenate(
                    [to_uint8(model.decode_first_stage(b.image_latent).clamp(-1, 1)) for b in batches]
                ),
                "truth": np.concatenate([b.inputs.image for b in batches]),
                "landmarks": np.concatenate([b.landmarks for b in batches]),
            }
        truth, landmarks = out[top]["truth"], out[top]["landmarks"]
        n = len(rows)
        entry = VideoSharpness(video=v, skin_tone=video_skin_tone(root, v), frames=n)
        t = np.array([float(truth_open[int(datasets[top].frames[i])]) for i in rows])
        opening_true += t.tolist()
        for name, o in out.items():
            lms = o["landmarks"]
            measured = measure_openings([o["generated"]], lms, video_mouth_width(lms))
            opening_gen[name] += measured
            entry.correlation[name] = pearson(t, np.array(measured))
            kinds = {"generated": o["generated"], "first_stage": o["first_stage"]}
            if sides[name] < side:  # the truth at the comparison side is the truth itself
                kinds["truth_at_side"] = o["truth"]
            for kind, images in kinds.items():
                p, s = mouth_scores(_upsample(images, side), truth, landmarks)
                getattr(entry, kind)[name] = MouthScores(p / n, s / n)
                acc = sums[kind].setdefault(name, [0.0, 0.0])
                acc[0] += p
                acc[1] += s
        videos.append(entry)
    total = len(opening_true)

    def pooled(kind: str) -> dict[str, MouthScores]:
        return {name: MouthScores(p / total, s / total) for name, (p, s) in sums[kind].items()}

    return SharpnessResult(
        side=side,
        sides=sides,
        videos=videos,
        correlation={name: pearson(np.array(opening_true), np.array(g)) for name, g in opening_gen.items()},
        generated=pooled("generated"),
        first_stage=pooled("first_stage"),
        truth_at_side=pooled("truth_at_side"),
        seconds_per_frame={name: s / max(total, 1) for name, s in seconds.items()},
        frames=total,
    )
