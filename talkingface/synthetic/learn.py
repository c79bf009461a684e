"""Train and evaluate the synthetic DiffTalk: does the audio drive the mouth?

Plain-PyTorch loop over the engine's API (``encode_conditions``, ``training_loss``, EMA) on first-stage latents
cached in memory. The evaluation generates held-out frames through the inference pipeline's own frame-input path
(:func:`~talkingface.inference.pipeline.inpaint_frames`: the pipeline's reference frame, ``x0`` = the frame's
latent outside the jaw polygon, masked image black from landmark 33 down, DPM-Solver++, the pipeline's uint8
conversion), so a test can show both give the same frames. It measures the generated mouth opening on pixels alone
(mean height of the dark mouth interior in a box below the nose bottom,
:func:`~talkingface.synthetic.face.mouth_opening_px`) against the ground-truth opening, and PSNR/SSIM of the mouth
box.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from talkingface.data.constants import NOSE_BOTTOM
from talkingface.data.dataset import TalkDataset, draw_reference
from talkingface.data.layout import DatasetLayout, parse_name
from talkingface.evaluate.metrics import batch_metrics
from talkingface.inference.inputs import FrameInputs, frame_inputs, to_unit
from talkingface.inference.pipeline import (
    default_reference_frame,
    encode_frames,
    inpaint_frames,
    reference_latent,
    to_uint8,
)
from talkingface.model.image_driven_talkingface.DiffTalk.config import DiffTalkConfig
from talkingface.model.image_driven_talkingface.DiffTalk.model import DiffTalkModel
from talkingface.synthetic.face import mouth_opening_px, video_mouth_width
from talkingface.synthetic.generate import mouth_truth

log = logging.getLogger(__name__)


@dataclass
class TrainFrames:
    """Training items of a split, loaded through ``TalkDataset`` (so masks and scaling are the loader's)."""

    images: torch.Tensor  # (N, 3, R, R) in [-1, 1]
    masked: torch.Tensor  # (N, 3, R, R) training-masked images
    landmarks: torch.Tensor  # (N, 39, 2) in R-pixel units
    audio: torch.Tensor  # (N, 8, 16, 29)
    videos: np.ndarray  # (N,)
    frames: np.ndarray  # (N,)


def load_train_frames(root: str | Path, split: str | Path, size: int, progress: bool = True) -> TrainFrames:
    ds = TalkDataset(root, split, image_size=size)
    items = [ds[i] for i in tqdm(range(len(ds)), desc="load frames", disable=not progress, leave=False)]

    def stack(key: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([it[key] for it in items]))

    return TrainFrames(
        images=stack("image").permute(0, 3, 1, 2).contiguous(),
        masked=stack("image_mask").permute(0, 3, 1, 2).contiguous(),
        landmarks=stack("landmarks"),
        audio=stack("audio_smooth"),
        videos=ds.videos.copy(),
        frames=ds.frames.copy(),
    )


@torch.no_grad()
def encode_all(model: DiffTalkModel, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    return torch.cat([model.encode_first_stage(images[i : i + batch]) for i in range(0, len(images), batch)])


@dataclass
class TrainStats:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def train_diffusion(
    model: DiffTalkModel,
    data: TrainFrames,
    counts: list[int],
    steps: int,
    batch_size: int,
    lr: float,
    shuffle_audio: bool = False,
    min_distance: int = 60,
    seed: int = 0,
    progress: bool = True,
    every: int = 0,
    on_checkpoint: Callable[[int, list[float]], None] | None = None,
) -> TrainStats:
    """AdamW over UNet + condition encoders, EMA after each step. ``shuffle_audio``: the control — every frame
    gets the audio of a random other training frame (a fixed permutation), so audio carries no information.
    ``on_checkpoint(step, losses)`` is called every ``every`` steps and after the last (the model in eval mode; training
    resumes afterwards): e.g. evaluate the learning curve and save the model so far."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    z = encode_all(model, data.images)
    zm = encode_all(model, data.masked)
    index = {(int(v), int(f)): i for i, (v, f) in enumerate(zip(data.videos, data.frames, strict=True))}
    audio = data.audio[torch.from_numpy(rng.permutation(len(data.audio)))] if shuffle_audio else data.audio
    params = [p for p in model.trainable_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200))
    model.train()
    stats = TrainStats(steps, 0.0)
    bar = tqdm(range(steps), desc="diffusion" + (" (shuffled audio)" if shuffle_audio else ""), disable=not progress)
    for step in bar:
        idx = rng.integers(len(z), size=batch_size)
        ref = [
            index.get(
                (
                    int(data.videos[i]),
                    draw_reference(int(data.frames[i]), counts[data.videos[i] - 1], min_distance, rng),
                ),
                int(i),
            )
            for i in idx
        ]
        t_idx = torch.from_numpy(idx)
        cond = model.encode_conditions(
            audio[t_idx], data.landmarks[t_idx], reference_latent=z[ref], masked_latent=zm[t_idx]
        )
        loss, _ = model.training_loss(z[t_idx], cond)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        model.model_ema(model.model)
        stats.losses.append(float(loss.detach()))
        if len(stats.losses) % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(stats.losses[-50:]):.4f}")
        done = step + 1
        if on_checkpoint is not None and (done == steps or (every > 0 and done % every == 0)):
            stats.seconds = time.perf_counter() - t0
            model.eval()
            on_checkpoint(done, stats.losses)
            model.train()
            t0 = time.perf_counter() - stats.seconds  # checkpoint time is not training time
    model.eval()
    stats.seconds = time.perf_counter() - t0
    return stats


@dataclass
class EvalResult:
    correlation: float  # Pearson r, generated vs ground-truth opening, pooled over held-out frames
    correlation_per_video: list[float]
    correlation_gt_pixels: float  # the same measure on the ground-truth frames (ceiling of the measure)
    correlation_first_stage: float  # ... on ground truth passed through the first stage (what the model can reach)
    mouth_psnr: float
    mouth_ssim: float
    frames: int
    opening_true: list[float]
    opening_generated: list[float]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or a.std() < 1e-12 or b.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


@dataclass
class HeldoutBatch:
    """One batch of generated held-out frames of a video."""

    rows: list[int]  # dataset items
    inputs: FrameInputs  # the pipeline's frame inputs (``image``: the ground-truth frames, uint8)
    landmarks: np.ndarray  # (B, 68, 2) landmarks at the model's image size
    image_latent: torch.Tensor  # first-stage latents of the ground-truth frames
    frames: torch.Tensor  # (B, 3, R, R) generated frames in [-1, 1]


def read_crop(ds: TalkDataset, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A saved frame (uint8 RGB crop) and its 68 landmarks in crop pixels."""
    video, frame = parse_name(name)
    return ds.layout.read_frame(video, frame), ds.layout.read_landmarks(video, frame)


@torch.no_grad()
def generate_heldout(
    model: DiffTalkModel,
    ds: TalkDataset,
    rows: list[int],
    generator: torch.Generator,
    sample_steps: int = 20,
    batch_size: int = 50,
) -> Iterator[HeldoutBatch]:
    """Generate the dataset items ``rows`` (frames of one video) as the lip-sync pipeline does: its reference
    frame, its frame inputs from the saved crops, the dataset's audio windows, ``x_T`` drawn per batch from
    ``generator``, DPM-Solver++ with ``sample_steps`` steps and the model's current weights."""
    size, latent = model.config.first_stage.resolution, model.image_size
    v = int(ds.videos[rows[0]])
    if any(int(ds.videos[i]) != v for i in rows):
        raise ValueError("generate_heldout takes the frames of one video")
    ref_crop, _ = read_crop(ds, f"{v}_{default_reference_frame(int(ds.counts[v - 1]))}")
    ref = reference_latent(model, ref_crop)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        crops = [read_crop(ds, f"{v}_{int(ds.frames[i])}") for i in chunk]
        inputs = FrameInputs.stack([frame_inputs(c, lm, size, latent) for c, lm in crops])
        audio = np.stack([ds[i]["audio_smooth"] for i in chunk])
        latents = encode_frames(model, inputs)
        noise = model.initial_noise(len(chunk), generator)
        frames = inpaint_frames(
            model, inputs, audio, ref, noise, latents, sampler="dpm++", steps=sample_steps, generator=generator
        )
        landmarks = np.stack([lm * (size / c.shape[1]) for c, lm in crops])
        yield HeldoutBatch(list(chunk), inputs, landmarks, latents[0], frames)


@torch.no_grad()
def evaluate_heldout(
    model: DiffTalkModel,
    root: str | Path,
    split: str | Path,
    max_frames_per_video: int = 100,
    sample_steps: int = 20,
    batch_size: int = 50,
    seed: int = 0,
    progress: bool = True,
) -> EvalResult:
    """Generate the mouths of held-out frames as the inference pipeline does (EMA weights) and compare with the
    truth."""
    root = Path(root)
    size = model.config.first_stage.resolution
    gen = torch.Generator().manual_seed(seed)
    true_open, gen_open, gt_open, rec_open, per_video = [], [], [], [], []
    metrics: list[dict[str, float]] = []
    ds = TalkDataset(root, split, image_size=size)
    by_video: dict[int, list[int]] = {}
    for i, v in enumerate(ds.videos):
        by_video.setdefault(int(v), []).append(i)
    with model.ema_scope():
        for v, rows in tqdm(by_video.items(), desc="evaluate", disable=not progress, leave=False):
            rows = rows[:max_frames_per_video]
            truth = mouth_truth(root, v)[:, 0]
            v_true, v_pred, v_img, v_rec, v_lm = [], [], [], [], []
            for batch in generate_heldout(model, ds, rows, gen, sample_steps, batch_size):
                b = len(batch.rows)
                image = torch.from_numpy(to_unit(batch.inputs.image))
                pred = batch.frames.cpu()
                metrics.append({k: val * b for k, val in batch_metrics(pred, image, landmarks=batch.landmarks).items()})
                v_true += [float(truth[int(ds.frames[i])]) for i in batch.rows]
                v_pred.append(to_uint8(pred))
                v_img.append(batch.inputs.image)
                v_rec.append(to_uint8(model.decode_first_stage(batch.image_latent).clamp(-1, 1)))
                v_lm.append(batch.landmarks)
            lms = np.concatenate(v_lm)
            width = video_mouth_width(lms)  # fixed per video
            v_gen = _measure(v_pred, lms, width)
            gt_open += _measure(v_img, lms, width)
            rec_open += _measure(v_rec, lms, width)
            per_video.append(_pearson(np.array(v_true), np.array(v_gen)))
            true_open += v_true
            gen_open += v_gen
    n = len(true_open)
    return EvalResult(
        correlation=_pearson(np.array(true_open), np.array(gen_open)),
        correlation_per_video=per_video,
        correlation_gt_pixels=_pearson(np.array(true_open), np.array(gt_open)),
        correlation_first_stage=_pearson(np.array(true_open), np.array(rec_open)),
        mouth_psnr=sum(m["mouth_psnr"] for m in metrics) / n,
        mouth_ssim=sum(m["mouth_ssim"] for m in metrics) / n,
        frames=n,
        opening_true=true_open,
        opening_generated=gen_open,
    )


def _measure(images: list[np.ndarray], landmarks: np.ndarray, width: float) -> list[float]:
    """:func:`mouth_opening_px` of each frame of a video (batches of uint8 RGB, landmarks at the model size)."""
    return [
        mouth_opening_px(im, lm[NOSE_BOTTOM], width) for im, lm in zip(np.concatenate(images), landmarks, strict=True)
    ]


def build_model(cfg: DiffTalkConfig, first_stage: torch.nn.Module, scale_factor: float) -> DiffTalkModel:
    """A fresh DiffTalk for ``cfg`` with the given trained first stage and latent scale."""
    cfg.model.diffusion.scale_factor = float(scale_factor)
    model = DiffTalkModel(cfg.model)
    model.first_stage_model.load_state_dict(first_stage.state_dict())
    return model


def video_counts(root: str | Path) -> list[int]:
    return DatasetLayout(root).read_data_txt()
