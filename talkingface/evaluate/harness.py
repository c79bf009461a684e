"""The evaluation run: align two frame sequences, compute per-frame and aggregate metrics, collect notes."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from talkingface.evaluate.errors import EvaluationError, MissingWeightsError
from talkingface.evaluate.landmarks import Detector, landmarks_for, lmd, mouth_opening
from talkingface.evaluate.media import align, load_frames
from talkingface.metrics.image import psnr_image, ssim_image
from talkingface.metrics.regions import crop, face_box, mouth_box

log = logging.getLogger(__name__)

#: Metrics computed from the frames and our landmark detector (no weights needed).
CHEAP_METRICS = ("psnr", "ssim", "mouth_psnr", "mouth_ssim", "lmd")
#: Metrics that need weight files given by path.
WEIGHTED_METRICS = ("lpips", "fid", "lse")
ALL_METRICS = CHEAP_METRICS + WEIGHTED_METRICS
CROPS = ("face", "full")


@dataclass
class EvalOptions:
    """What to compute and with which weights (paths are never downloaded)."""

    metrics: Sequence[str] | None = None  # None: the cheap ones plus every weighted one whose weights are given
    crop: str = "face"
    face_margin: float = 0.1
    mouth_margin: float = 0.25
    pred_landmarks: np.ndarray | None = None  # (N, 68, 2) precomputed, instead of running the detector
    gt_landmarks: np.ndarray | None = None
    detector: Detector | None = None  # default: talkingface.media.landmarks (dlib)
    lpips_net: str = "alex"
    lpips_backbone: str | Path | None = None  # torchvision-format AlexNet/VGG16 state dict (.pth)
    lpips_linear: str | Path | None = None  # LPIPS v0.1 linear layers (alex.pth / vgg.pth)
    fid_features: str | Path | None = None  # TorchScript feature extractor
    syncnet: str | Path | None = None  # syncnet_v2.model state dict or TorchScript
    audio: str | Path | None = None  # speech for LSE (default: pred's audio stream)
    device: str = "cpu"


@dataclass
class EvalResult:
    """Per-frame values (NaN where undefined), aggregates and set-level scores, ready for the report."""

    pred: str
    gt: str
    frames: int
    size: tuple[int, int]
    crop: str
    per_frame: dict[str, list[float]] = field(default_factory=dict)
    aggregate: dict[str, dict[str, float]] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fps: float | None = None  # the rate the frames were compared at (gt's, else pred's)
    pred_fps: float | None = None  # the inputs' own rates (None: frame directory)
    gt_fps: float | None = None

    def summary(self) -> dict[str, float]:
        """One number per metric: the mean of per-frame metrics, and the set-level scores."""
        out = {k: v["mean"] for k, v in self.aggregate.items() if not k.startswith("mouth_open")}
        out.update(self.scores)
        return out


def resolve_metrics(options: EvalOptions) -> list[str]:
    """The metrics to run; raises MissingWeightsError for a requested metric whose weights are not given."""
    given = {
        "lpips": options.lpips_backbone and options.lpips_linear,
        "fid": options.fid_features,
        "lse": options.syncnet,
    }
    if options.crop not in CROPS:
        raise EvaluationError("--crop", f"must be one of {CROPS}, got {options.crop!r}")
    if options.metrics is None:
        return list(CHEAP_METRICS) + [m for m in WEIGHTED_METRICS if given[m]]
    unknown = [m for m in options.metrics if m not in ALL_METRICS]
    if unknown:
        raise EvaluationError("--metrics", f"unknown metric(s) {unknown}; choose from {list(ALL_METRICS)}")
    if "lpips" in options.metrics:
        if not options.lpips_backbone:
            raise MissingWeightsError(
                "lpips",
                "--lpips-backbone",
                f"the torchvision {options.lpips_net} weights (e.g. alexnet-owt-7be5be79.pth)",
            )
        if not options.lpips_linear:
            raise MissingWeightsError(
                "lpips", "--lpips-linear", f"the LPIPS v0.1 linear weights ({options.lpips_net}.pth)"
            )
    if "fid" in options.metrics and not options.fid_features:
        raise MissingWeightsError(
            "fid", "--fid-features", "a TorchScript Inception feature extractor (e.g. inception-2015-12-05.pt)"
        )
    if "lse" in options.metrics and not options.syncnet:
        raise MissingWeightsError("lse", "--syncnet", "the SyncNet weights (syncnet_v2.model)")
    return list(dict.fromkeys(options.metrics))


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    valid = arr[~np.isnan(arr)]
    if valid.size == 0:
        return {"mean": math.nan, "std": math.nan, "median": math.nan, "min": math.nan, "max": math.nan, "count": 0}
    with np.errstate(invalid="ignore"):
        return {
            "mean": float(valid.mean()),
            "std": float(valid.std()) if np.isfinite(valid).all() else math.nan,
            "median": float(np.median(valid)),
            "min": float(valid.min()),
            "max": float(valid.max()),
            "count": int(valid.size),
        }


def _landmarks(frames, given, detector_factory: Callable[[], Detector]) -> list[np.ndarray | None]:
    return landmarks_for(frames, given if given is not None else detector_factory())


def evaluate_frames(
    pred_frames: Sequence[np.ndarray],
    gt_frames: Sequence[np.ndarray],
    options: EvalOptions | None = None,
    *,
    pred_name: str = "pred",
    gt_name: str = "gt",
    notes: Sequence[str] = (),
) -> EvalResult:
    """Evaluate two aligned sequences of RGB uint8 frames of equal count and size."""
    options = options or EvalOptions()
    metrics = resolve_metrics(options)
    if len(pred_frames) != len(gt_frames) or not gt_frames:
        raise ValueError(f"need equally many (>0) frames, got {len(pred_frames)} and {len(gt_frames)}")
    hw = gt_frames[0].shape[:2]
    n = len(gt_frames)
    result = EvalResult(pred_name, gt_name, n, (int(hw[0]), int(hw[1])), options.crop, notes=list(notes))

    needs_gt_lms = options.crop == "face" or any(m in metrics for m in ("mouth_psnr", "mouth_ssim", "lmd"))
    needs_pred_lms = "lmd" in metrics
    cached: list[Detector] = []

    def detector() -> Detector:
        if not cached:
            if options.detector is not None:
                cached.append(options.detector)
            else:
                from talkingface.evaluate.landmarks import default_detector

                cached.append(default_detector())
        return cached[0]

    gt_lms = _landmarks(gt_frames, options.gt_landmarks, detector) if needs_gt_lms else [None] * n
    pred_lms = _landmarks(pred_frames, options.pred_landmarks, detector) if needs_pred_lms else [None] * n

    missing_gt = sum(x is None for x in gt_lms) if needs_gt_lms else 0
    if missing_gt:
        result.notes.append(
            f"no ground-truth face in {missing_gt} of {n} frames: face crop fell back to the full "
            "frame there; mouth metrics and LMD are undefined (NaN) there"
        )
    if needs_pred_lms:
        missing_pred = sum(x is None for x in pred_lms)
        if missing_pred:
            result.notes.append(f"no predicted face in {missing_pred} of {n} frames: LMD undefined there")

    face_boxes = []
    for lms in gt_lms:
        if options.crop == "face" and lms is not None:
            face_boxes.append(face_box(lms, hw, options.face_margin))
        else:
            face_boxes.append((0, 0, int(hw[1]), int(hw[0])))

    pf: dict[str, list[float]] = {m: [] for m in metrics if m in ("psnr", "ssim", "mouth_psnr", "mouth_ssim")}
    for i in range(n):
        p, g = crop(pred_frames[i], face_boxes[i]), crop(gt_frames[i], face_boxes[i])
        if "psnr" in pf:
            pf["psnr"].append(psnr_image(p, g))
        if "ssim" in pf:
            pf["ssim"].append(ssim_image(p, g))
        if "mouth_psnr" in pf or "mouth_ssim" in pf:
            box = None if gt_lms[i] is None else mouth_box(gt_lms[i], hw, options.mouth_margin)
            mp, mg = (None, None) if box is None else (crop(pred_frames[i], box), crop(gt_frames[i], box))
            if "mouth_psnr" in pf:
                pf["mouth_psnr"].append(math.nan if box is None else psnr_image(mp, mg))
            if "mouth_ssim" in pf:
                pf["mouth_ssim"].append(math.nan if box is None else ssim_image(mp, mg))
    if "lmd" in metrics:
        per = lmd(pred_lms, gt_lms)
        pf["lmd"] = per.tolist()
        eyes = np.array([np.nan if g is None else np.linalg.norm(g[45] - g[36]) for g in gt_lms])
        with np.errstate(invalid="ignore", divide="ignore"):
            pf["lmd_norm"] = (per / eyes).tolist()
        pf["mouth_open_pred"] = [mouth_opening(x) for x in pred_lms]
        pf["mouth_open_gt"] = [mouth_opening(x) for x in gt_lms]
    elif needs_gt_lms:
        pf["mouth_open_gt"] = [mouth_opening(x) for x in gt_lms]

    if "lpips" in metrics:
        from talkingface.evaluate.lpips import LPIPS

        net = LPIPS.from_files(options.lpips_backbone, options.lpips_linear, options.lpips_net).to(options.device)
        pf["lpips"] = [
            net.distance_images(crop(pred_frames[i], face_boxes[i]), crop(gt_frames[i], face_boxes[i]))
            for i in range(n)
        ]
    result.per_frame = pf
    result.aggregate = {k: _stats(v) for k, v in pf.items()}

    if "fid" in metrics:
        from talkingface.evaluate.fid import fid_from_frames

        pred_crops = [crop(f, b) for f, b in zip(pred_frames, face_boxes)]
        gt_crops = [crop(f, b) for f, b in zip(gt_frames, face_boxes)]
        result.scores["fid"] = fid_from_frames(pred_crops, gt_crops, options.fid_features, options.device)
        if n < 2048:
            result.notes.append(
                f"FID from {n} frames per side (fewer than the 2048 feature dimensions): the "
                "covariances are rank-deficient and FID is biased upwards; compare only like with like"
            )
    if "lse" in metrics:
        from talkingface.evaluate.syncnet import lse_from_frames, syncnet_crop

        audio = options.audio or (pred_name if Path(pred_name).is_file() else None)
        if audio is None:
            raise EvaluationError("--audio", "LSE needs the speech: give --audio FILE (pred is not a video file)")
        boxes = [None if g is None or options.crop == "full" else face_box(g, hw, 0.0) for g in gt_lms]
        crops = [syncnet_crop(f, b) for f, b in zip(pred_frames, boxes)]
        lse = lse_from_frames(crops, audio, options.syncnet, device=options.device)
        result.scores.update({"lse_c": lse.confidence, "lse_d": lse.min_distance, "av_offset": float(lse.offset)})
    return result


def evaluate(pred: str | Path, gt: str | Path, options: EvalOptions | None = None) -> EvalResult:
    """Load, align and evaluate ``pred`` against ``gt`` (video files or frame directories)."""
    options = options or EvalOptions()
    resolve_metrics(options)  # fail on missing weights before decoding anything
    pred_seq, gt_seq = load_frames(pred), load_frames(gt)
    aligned = align(pred_seq, gt_seq)
    indices = {"pred_landmarks": aligned.pred_index, "gt_landmarks": aligned.gt_index}
    for name, index in indices.items():
        arr = getattr(options, name)
        count = int(index.max()) + 1 if len(index) else 0
        if arr is None:
            continue
        if len(arr) < count:
            raise EvaluationError(f"--{name.replace('_', '-')}", f"holds {len(arr)} frames, {count} are needed")
        # per source frame of that input: follow the frames through the time alignment
        options = replace(options, **{name: np.asarray(arr)[index]})
    result = evaluate_frames(
        aligned.pred, aligned.gt, options, pred_name=str(pred), gt_name=str(gt), notes=aligned.notes
    )
    result.fps = aligned.fps
    result.pred_fps, result.gt_fps = pred_seq.fps, gt_seq.fps
    metrics = resolve_metrics(options)
    if "lse" in metrics and aligned.fps and abs(aligned.fps - 25) > 0.01:
        result.notes.append(
            f"pred frames are evaluated at {aligned.fps:g} fps; SyncNet assumes 25 fps, so LSE is not comparable"
        )
    return result


def result_to_dict(result: EvalResult) -> dict[str, Any]:
    """Plain-Python view of a result (non-finite floats kept; the report writers encode them)."""
    return {
        "pred": result.pred,
        "gt": result.gt,
        "frames": result.frames,
        "size": {"height": result.size[0], "width": result.size[1]},
        "crop": result.crop,
        "fps": result.fps,
        "pred_fps": result.pred_fps,
        "gt_fps": result.gt_fps,
        "summary": result.summary(),
        "aggregate": result.aggregate,
        "scores": result.scores,
        "notes": result.notes,
        "per_frame": result.per_frame,
    }
