"""Evaluate the synthetic DiffTalk on held-out identities: does the audio drive the mouth?

Training is the product's: ``benchmarks/learnability.py`` runs ``trainer/DiffTalkTrainer.py``'s own entry point
(the ``talkingface train`` command) and evaluates through :class:`~talkingface.synthetic.curve.HeldoutCurve`. The
evaluation generates held-out frames through the inference pipeline's own frame-input path
(:func:`~talkingface.inference.pipeline.inpaint_frames`: the pipeline's reference frame, ``x0`` = the frame's
latent outside the jaw polygon, masked image black from landmark 33 down, DPM-Solver++, the pipeline's uint8
conversion), so a test can show both give the same frames. It measures the generated mouth opening on pixels alone
(the dark mouth interior in a box below the nose bottom, :func:`~talkingface.synthetic.face.mouth_opening_px`)
against the ground-truth opening, PSNR/SSIM of the mouth box, the first stage's reconstruction error, and how far
the mouth stays open in the pauses of the speech, per held-out identity.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from talkingface.constants import NOSE_BOTTOM
from talkingface.data.dataset import TalkDataset
from talkingface.data.layout import DatasetLayout, parse_name
from talkingface.inference.inputs import FrameInputs, frame_inputs, to_unit
from talkingface.inference.pipeline import (
    default_reference_frame,
    encode_frames,
    inpaint_frames,
    reference_latent,
    to_uint8,
)
from talkingface.inference.sampling import plan_sampling
from talkingface.metrics.batch import batch_metrics
from talkingface.model.image_driven_talkingface.DiffTalk.model import DiffTalkModel
from talkingface.model.image_driven_talkingface.DiffTalk.plan import DEMO_STEPS, DPM_SOLVER_PP
from talkingface.synthetic.face import mouth_opening_px, video_mouth_width
from talkingface.synthetic.generate import mouth_truth, video_skin

log = logging.getLogger(__name__)


def load_first_stage_images(
    root: str | Path, split: str | Path, size: int, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames of a split and their training-masked versions, ``(N, 3, R, R)`` in [-1, 1], loaded through
    ``TalkDataset`` (so masks and scaling are the loader's): the training images of the synthetic first stage."""
    ds = TalkDataset(root, split, image_size=size)
    images, masked = [], []
    for i in tqdm(range(len(ds)), desc="load frames", disable=not progress, leave=False):
        item = ds[i]
        images.append(item["image"])
        masked.append(item["image_mask"])
    return (
        torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(np.stack(masked)).permute(0, 3, 1, 2).contiguous(),
    )


#: Ground-truth opening (0..1) below which a frame is a pause, and above which it is speech (silence measure).
PAUSE_OPENING = 0.05
SPEECH_OPENING = 0.3
#: A generated mouth is "closed in silence" when its mean opening in the pauses exceeds the ground truth's by at
#: most this fraction of the ground truth's mean speech-minus-pause opening (both read by the same pixel measure).
SILENCE_TOLERANCE = 0.15


@dataclass
class VideoEval:
    """One held-out identity: how well its generated mouth follows the truth, and how well the first stage alone
    reconstructs its frames (a colour failure of the first stage shows up here before any diffusion)."""

    video: int
    frames: int
    correlation: float  # Pearson r, generated vs ground-truth opening
    correlation_gt_pixels: float  # the measure on the ground-truth frames (its ceiling for this identity)
    correlation_first_stage: float  # ... on the ground truth through the first stage alone (what diffusion can reach)
    mouth_psnr: float
    mouth_ssim: float
    first_stage_l1: float  # mean |x - decode(encode(x))| over the frame, in [0, 1] units
    first_stage_mouth_psnr: float
    skin_luminance: float  # median luminance (0..1) of a cheek patch of the ground-truth frames
    skin_tone: int | None  # the generator's Monk skin-tone bin (0 lightest .. 9 darkest), when recorded
    pause_frames: int
    opening_pause_generated: float  # mean measured opening in the pauses (generated frames)
    opening_pause_truth: float  # ... on the ground-truth frames
    opening_speech_truth: float  # mean measured opening of the ground-truth frames in speech

    @property
    def silence_residual(self) -> float:
        """How far the generated mouth stays open in pauses, as a fraction of the truth's speech opening (0: as
        closed as the truth; NaN without pauses)."""
        span = self.opening_speech_truth - self.opening_pause_truth
        if self.pause_frames == 0 or span <= 0:
            return float("nan")
        return (self.opening_pause_generated - self.opening_pause_truth) / span


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
    videos: list[VideoEval] = field(default_factory=list)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two series (0 when either is constant or shorter than 2)."""
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
    sample_steps: int | None = DEMO_STEPS,
    batch_size: int = 50,
    sampler: str | None = DPM_SOLVER_PP,
) -> Iterator[HeldoutBatch]:
    """Generate the dataset items ``rows`` (frames of one video) as the lip-sync pipeline does: its reference
    frame, its frame inputs from the saved crops, the dataset's audio windows, ``x_T`` drawn per batch from
    ``generator``, ``sampler`` (DPM-Solver++ by default) with ``sample_steps`` steps and the model's current weights.
    ``sampler=None, sample_steps=None``: the sampler the checkpoint records (a distilled student's DDIM grid), as the
    pipeline resolves it (:func:`~talkingface.inference.sampling.plan_sampling`)."""
    plan, _ = plan_sampling(model, sampler, sample_steps)
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
            model,
            inputs,
            audio,
            ref,
            noise,
            latents,
            plan=plan,
            generator=generator,
        )
        landmarks = np.stack([lm * (size / c.shape[1]) for c, lm in crops])
        yield HeldoutBatch(list(chunk), inputs, landmarks, latents[0], frames)


@torch.no_grad()
def evaluate_heldout(
    model: DiffTalkModel,
    root: str | Path,
    split: str | Path,
    max_frames_per_video: int = 100,
    sample_steps: int | None = DEMO_STEPS,
    batch_size: int = 50,
    seed: int = 0,
    progress: bool = True,
    sampler: str | None = DPM_SOLVER_PP,
) -> EvalResult:
    """Generate the mouths of held-out frames as the inference pipeline does (EMA weights) and compare with the
    truth, pooled and per identity (see :class:`VideoEval`)."""
    root = Path(root)
    size = model.config.first_stage.resolution
    gen = torch.Generator().manual_seed(seed)
    true_open, gen_open, gt_open, rec_open = [], [], [], []
    metrics: list[dict[str, float]] = []
    videos: list[VideoEval] = []
    ds = TalkDataset(root, split, image_size=size)
    by_video: dict[int, list[int]] = {}
    for i, v in enumerate(ds.videos):
        by_video.setdefault(int(v), []).append(i)
    with model.ema_scope():
        for v, rows in tqdm(by_video.items(), desc="evaluate", disable=not progress, leave=False):
            rows = rows[:max_frames_per_video]
            truth = mouth_truth(root, v)[:, 0]
            v_true, v_pred, v_img, v_rec, v_lm = [], [], [], [], []
            v_metrics, v_rec_metrics, v_l1 = [], [], []
            for batch in generate_heldout(model, ds, rows, gen, sample_steps, batch_size, sampler):
                b = len(batch.rows)
                image = torch.from_numpy(to_unit(batch.inputs.image))
                pred = batch.frames.cpu()
                rec = model.decode_first_stage(batch.image_latent).clamp(-1, 1).cpu()
                m = batch_metrics(pred, image, landmarks=batch.landmarks)
                metrics.append({k: val * b for k, val in m.items()})
                v_metrics.append({k: val * b for k, val in m.items()})
                v_rec_metrics.append(batch_metrics(rec, image, landmarks=batch.landmarks)["mouth_psnr"] * b)
                v_l1.append(float((rec - image).abs().mean()) / 2 * b)
                v_true += [float(truth[int(ds.frames[i])]) for i in batch.rows]
                v_pred.append(to_uint8(pred))
                v_img.append(batch.inputs.image)
                v_rec.append(to_uint8(rec))
                v_lm.append(batch.landmarks)
            lms = np.concatenate(v_lm)
            width = video_mouth_width(lms)  # fixed per video
            v_gen = np.array(measure_openings(v_pred, lms, width))
            v_gt = np.array(measure_openings(v_img, lms, width))
            v_fs = measure_openings(v_rec, lms, width)
            rec_open += v_fs
            t = np.array(v_true)
            pause, speech = t < PAUSE_OPENING, t > SPEECH_OPENING
            n = len(t)
            videos.append(
                VideoEval(
                    video=v,
                    frames=n,
                    correlation=pearson(t, v_gen),
                    correlation_gt_pixels=pearson(t, v_gt),
                    correlation_first_stage=pearson(t, np.array(v_fs)),
                    mouth_psnr=sum(m["mouth_psnr"] for m in v_metrics) / n,
                    mouth_ssim=sum(m["mouth_ssim"] for m in v_metrics) / n,
                    first_stage_l1=sum(v_l1) / n,
                    first_stage_mouth_psnr=sum(v_rec_metrics) / n,
                    skin_luminance=_skin_luminance(np.concatenate(v_img), lms),
                    skin_tone=video_skin_tone(root, v),
                    pause_frames=int(pause.sum()),
                    opening_pause_generated=float(v_gen[pause].mean()) if pause.any() else float("nan"),
                    opening_pause_truth=float(v_gt[pause].mean()) if pause.any() else float("nan"),
                    opening_speech_truth=float(v_gt[speech].mean()) if speech.any() else float("nan"),
                )
            )
            gt_open += v_gt.tolist()
            true_open += v_true
            gen_open += v_gen.tolist()
    n = len(true_open)
    return EvalResult(
        correlation=pearson(np.array(true_open), np.array(gen_open)),
        correlation_per_video=[e.correlation for e in videos],
        correlation_gt_pixels=pearson(np.array(true_open), np.array(gt_open)),
        correlation_first_stage=pearson(np.array(true_open), np.array(rec_open)),
        mouth_psnr=sum(m["mouth_psnr"] for m in metrics) / n,
        mouth_ssim=sum(m["mouth_ssim"] for m in metrics) / n,
        frames=n,
        opening_true=true_open,
        opening_generated=gen_open,
        videos=videos,
    )


def video_skin_tone(root: Path, video: int) -> int | None:
    """The generator's skin-tone bin of a layout video (None when not recorded)."""
    try:
        return int(video_skin(root, video)["skin_tone"])
    except (OSError, KeyError, ValueError):
        return None


def _skin_luminance(images: np.ndarray, landmarks: np.ndarray) -> float:
    """Median luminance (0..1) of the cheeks: small boxes halfway between the nose (landmark 31/35) and the jaw
    (landmarks 3/13), over the frames ``(N, R, R, 3)`` uint8 with their landmarks at that size."""
    values = []
    for im, lm in zip(images, landmarks, strict=True):
        for a, b in ((31, 3), (35, 13)):
            cx, cy = (lm[a] + lm[b]) / 2
            r = max(1, int(round(0.04 * im.shape[0])))
            y0, x0 = max(int(cy) - r, 0), max(int(cx) - r, 0)
            patch = im[y0 : int(cy) + r + 1, x0 : int(cx) + r + 1].astype(np.float32) / 255.0
            if patch.size:
                values.append(np.median(patch @ np.array([0.299, 0.587, 0.114], np.float32)))
    return float(np.median(values)) if values else float("nan")


def measure_openings(images: list[np.ndarray], landmarks: np.ndarray, width: float) -> list[float]:
    """:func:`mouth_opening_px` of each frame of a video (batches of uint8 RGB, landmarks at the model size)."""
    return [
        mouth_opening_px(im, lm[NOSE_BOTTOM], width) for im, lm in zip(np.concatenate(images), landmarks, strict=True)
    ]


def video_counts(root: str | Path) -> list[int]:
    return DatasetLayout(root).read_data_txt()
