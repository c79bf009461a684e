"""End-to-end lip-sync speed (256x256 faces; 512x512 with ``--config``): reference-like settings vs our fast
defaults, in one run.

    python benchmarks/inference_fps.py                                  # GPU: paper config, random weights
    python benchmarks/inference_fps.py --config configs/latent-diffusion/talking-512.yaml   # the 512x512 model
    python benchmarks/inference_fps.py --tiny --frames 4 --steps 2      # CPU smoke run (tiny model)
    python benchmarks/inference_fps.py --student exported/student.safetensors   # + the distilled student's rows
    python benchmarks/inference_fps.py --video-size 720p                # the same face in 1280x720 frames

A synthetic portrait video (a face photo moving slowly; ``--video-size`` puts it in larger frames) and a
speech-like track of ``--frames`` frames are made in a temporary folder. Preprocessing (face detection, landmarks,
audio features) is timed once and shown excluded and included. Generation covers frame inputs, first-stage
encode, sampling, decode, paste-back and H.264/AAC encoding; "end to end" adds decoding the video's frames (timed
on its own), not face detection. Each setting is run by the product's ``LipSyncPipeline.run`` as a user runs it
(pipelined: ``cpu_threads`` workers), then once more serially with a synchronising ``StageClock`` to print where
each frame's time goes (ms per frame per stage and its share of that run's wall time).
Random weights are fine: the cost does not depend on the weights. ``--student CKPT`` adds a row timed the same
way with the sampler, steps and exact timesteps that a distilled student's checkpoint records (on the benchmark's
model, so a paper-config student can be timed in a ``--tiny`` CPU run too).

It also prints the per-frame GFLOPs of each stage of the full-size config (``--config``, else the paper's),
counted with PyTorch's FLOP counter on meta tensors (nothing is computed, so it takes a second), and the frames/s
they imply at the H100's bf16 peak: a projection, not a measurement. ``--no-flops`` skips it.
``benchmarks/resolution_cost.py`` compares the 256 and 512 models' FLOPs and CPU time per frame.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic face clip of the data tests

from data_fixtures import write_video, write_wav  # noqa: E402

from talkingface.constants import DEFAULT_STEPS, FPS, REFERENCE_DDIM_STEPS, SAMPLE_RATE  # noqa: E402  # noqa: E402
from talkingface.inference import LipSyncOptions, LipSyncPipeline, Speech  # noqa: E402
from talkingface.inference.blend import mouth_alpha, paste_window  # noqa: E402
from talkingface.inference.pipeline import DEFAULT_DECODE_MARGIN  # noqa: E402
from talkingface.inference.sampling import resolve_precision  # noqa: E402
from talkingface.inference.stages import StageClock  # noqa: E402
from talkingface.inference.video import PreparedVideo  # noqa: E402
from talkingface.media.decode import iter_frames  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel, load_config  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import load_checkpoint_file  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk.config import (  # noqa: E402
    ModelConfig,
    checkpoint_sampling,
    default_config_path,
)

TINY_CONFIG = ROOT / "configs" / "latent-diffusion" / "talking-tiny.yaml"
FEATURES = "mel"
#: The H100's dense bf16 peak the projection assumes (TFLOP/s).
H100_BF16_PEAK_TFLOPS = 790.0
#: Steps of the settings in the FLOP projection (the paper-config settings, whatever ``--steps`` says).
PROJECTED_STEPS = {"reference-like (ddim)": 200, "fast default (dpm++)": 25, "distilled student (ddim)": 4}


def student_settings(args: argparse.Namespace) -> list[LipSyncOptions]:
    """The distilled few-step student's settings (``--student CKPT``): the sampler, steps and exact timesteps its
    checkpoint records (``difftalk_sampling``), bf16 on CUDA like the fast default, at each of
    ``--student-batches``, and compiled at the largest with ``--compile``. Empty without ``--student``; an error
    when the file records no sampler (not a distilled student)."""
    if getattr(args, "student", None) is None:
        return []
    recorded = checkpoint_sampling(load_checkpoint_file(args.student), str(args.student))
    if recorded is None:
        raise SystemExit(f"error: {args.student}: records no sampler (difftalk_sampling): not a distilled student")
    out = [
        LipSyncOptions(
            sampler=recorded.sampler,
            steps=recorded.steps,
            timesteps=recorded.timesteps,
            precision="auto",
            batch_size=batch,
            crop_size=args.crop_size,
            seed=0,
        )
        for batch in args.student_batches
    ]
    if args.compile and out:
        out.append(dataclasses.replace(out[-1], compile=True))
    return out


#: ``--settings`` names.
SETTINGS = ("reference", "fast", "student")


def settings(args: argparse.Namespace) -> list[LipSyncOptions]:
    """Reference-like settings (DDIM 200, fp32, batch 20), our fast defaults (optionally compiled and with the
    window decode), the student's rows; ``--settings`` picks among them."""
    base = {"crop_size": args.crop_size, "seed": 0}
    out = []
    if "reference" in args.settings:
        out.append(
            LipSyncOptions(
                sampler="ddim", steps=args.steps or REFERENCE_DDIM_STEPS, precision="fp32", batch_size=20, **base
            )
        )
    if "fast" in args.settings:
        fast = LipSyncOptions(
            sampler="dpm++", steps=args.steps or DEFAULT_STEPS, precision="auto", batch_size=args.batch_size, **base
        )
        out.append(fast)
        if args.compile:
            out.append(dataclasses.replace(fast, compile=True))
        if args.decode_window:
            out.append(dataclasses.replace(fast, decode_window=True))
    return out + (student_settings(args) if "student" in args.settings else [])


def setting_names(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    if not names or set(names) - set(SETTINGS):
        raise argparse.ArgumentTypeError(f"comma-separated names among {', '.join(SETTINGS)}, got {text!r}")
    return names


def describe(options: LipSyncOptions, device: torch.device) -> str:
    if options.timesteps is not None:
        kind = f"distilled student (timesteps {list(options.timesteps)})"
    else:
        kind = "reference-like" if options.sampler == "ddim" else "fast default"
    dtype = resolve_precision(options.precision, device)
    precision = "fp32" if dtype is None else "bf16 UNet"
    if dtype is not None and resolve_precision(options.first_stage_precision, device) is not None:
        precision = "bf16 UNet and first stage"
    compiled = ", torch.compile" if options.compile else ""
    window = f", decode window (margin {options.decode_margin})" if options.decode_window else ""
    return f"{kind}: {options.sampler} {options.steps} steps, {precision}, batch {options.batch_size}{compiled}{window}"


#: ``--video-size`` names.
VIDEO_SIZES = {"288": (288, 288), "480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}


def video_size(text: str) -> tuple[int, int] | None:
    """``--video-size``: a name (``720p``) or ``WxH``; ``288`` (the default) is the plain 288 x 288 face clip."""
    if text in VIDEO_SIZES:
        return None if text == "288" else VIDEO_SIZES[text]
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"use one of {', '.join(VIDEO_SIZES)} or WxH, got {text!r}") from None
    if not (64 <= w <= 7680 and 64 <= h <= 4320):
        raise argparse.ArgumentTypeError(f"each side must be 64..7680 x 64..4320, got {text!r}")
    return w, h


def batches(text: str) -> list[int]:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated batch sizes, got {text!r}") from None
    if not out or any(not 1 <= b <= 1024 for b in out):
        raise argparse.ArgumentTypeError(f"batch sizes must be 1..1024, got {text!r}")
    return out


def decode_seconds(video: Path, n: int) -> float:
    """Seconds to decode the clip's first ``n`` frames at 25 fps (the part of preprocessing a run without face
    detection still pays: counted in the end-to-end figure)."""
    start = time.perf_counter()
    for _ in zip(range(n), iter_frames(video, FPS)):
        pass
    return time.perf_counter() - start


def stage_table(pipe: LipSyncPipeline, prepared: PreparedVideo, speech: Speech, out: Path) -> list[dict]:
    """One serial run of ``pipe``'s setting with a synchronising :class:`StageClock`: the per-stage rows."""
    options = pipe.options
    pipe.options = dataclasses.replace(options, cpu_threads=0)
    pipe.clock = StageClock(pipe.model.device, sync=True)
    try:
        result = pipe.run(prepared, speech, out, overwrite=True, progress=False)
        rows = pipe.clock.table(result.n_frames, result.generate_s)
    finally:
        pipe.options, pipe.clock = options, None
    print(f"\nwhere the time goes, serial run with synchronised timers ({result.fps_generate:.2f} frames/s):")
    print("| stage | ms per frame | share of the frame |")
    print("| --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['label']} | {r['ms_per_frame']:.2f} | {r['share']:.0%} |")
    rest = 1.0 - sum(r["share"] for r in rows)
    print(
        f"| other (Python, noise, conditions) | {1e3 * result.generate_s * rest / result.n_frames:.2f} | {rest:.0%} |"
    )
    return rows


def stage_gflops(
    alpha: np.ndarray | None, margin: int, config: ModelConfig | None = None
) -> tuple[dict[str, float], tuple[int, int, int, int], int]:
    """Per-frame GFLOPs of a config's stages at batch 1 (default: the paper config), counted by
    ``FlopCounterMode`` on meta tensors.

    The window decode covers the paste-back region of ``alpha`` plus ``margin`` cells (returned, with the latent
    side; the whole latent when ``alpha`` is None). The decodes skip the codebook lookup (autocast, which it uses,
    has no meta device); its distance matmul is counted on its own and added.
    """
    from torch.utils.flop_counter import FlopCounterMode

    cfg = config or load_config(default_config_path(), ["model.first_stage.ckpt_path=null"]).model
    with torch.device("meta"), torch.no_grad():
        model = DiffTalkModel(cfg).eval()
        vq, r, h = model.first_stage_model, cfg.first_stage.resolution, cfg.unet.image_size
        image, z = torch.zeros(1, 3, r, r), torch.zeros(1, cfg.first_stage.embed_dim, h, h)
        window = paste_window([alpha], r, h, margin) if alpha is not None else (0, h, 0, h)
        y0, y1, x0, x1 = window

        def count(fn: object) -> float:
            with FlopCounterMode(display=False) as counter:
                fn()  # type: ignore[operator]
            return counter.get_total_flops() / 1e9

        def quantize(cells: int) -> float:
            return count(
                lambda: (
                    torch.zeros(cells, cfg.first_stage.embed_dim)
                    @ torch.zeros(cfg.first_stage.embed_dim, cfg.first_stage.n_embed)
                )
            )

        c = cfg.conditioning
        audio = torch.zeros(1, c.audio_smooth_windows, c.audio_window, c.audio_feature_dim)
        cond = model.encode_conditions(audio, torch.zeros(1, c.landmark_count, 2), reference_latent=z, masked_latent=z)
        flops = {
            "unet": count(lambda: model.predict_eps(z, torch.zeros(1, dtype=torch.long), cond)),
            "encode": count(lambda: model.encode_first_stage(image)),
            "decode": count(lambda: vq.decode(z, quantize=False)) + quantize(h * h),
            "decode_window": count(lambda: vq.decode(z[:, :, y0:y1, x0:x1], quantize=False))
            + quantize((y1 - y0) * (x1 - x0)),
        }
    return flops, window, h


def print_flops(prepared: PreparedVideo, crop_size: int, config: ModelConfig | None = None) -> dict[str, object]:
    """Print the per-stage GFLOPs of ``config`` (default: the paper's) and the frames/s they imply at the H100's
    bf16 peak."""
    _, lms = prepared.crop(0)
    g, window, side = stage_gflops(mouth_alpha(lms, crop_size), DEFAULT_DECODE_MARGIN, config)
    share = (window[1] - window[0]) * (window[3] - window[2]) / side**2
    which = "paper config" if config is None else f"{config.first_stage.resolution}x{config.first_stage.resolution}"
    print(f"\nper-frame GFLOPs, {which}, batch 1 (torch.utils.flop_counter on meta tensors)")
    print("| stage | GFLOP per frame |")
    print("| --- | ---: |")
    print(f"| UNet, one evaluation | {g['unet']:.1f} |")
    print(f"| first-stage encodes (target frame and masked image) | 2 x {g['encode']:.1f} |")
    print(f"| decode, whole {side}x{side} latent | {g['decode']:.1f} |")
    print(
        f"| window decode, {window[1] - window[0]}x{window[3] - window[2]} cells (margin {DEFAULT_DECODE_MARGIN}, "
        f"{share:.0%} of the latent; this clip's frame 0) | {g['decode_window']:.1f} |"
    )
    print(f"\nprojection at the H100's bf16 peak ({H100_BF16_PEAK_TFLOPS:g} TFLOP/s, 100 % utilisation; not measured)")
    print("| setting | steps | TFLOP per frame | projected frames/s | with window decode: TFLOP | frames/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for label, steps in PROJECTED_STEPS.items():
        full = steps * g["unet"] + 2 * g["encode"] + g["decode"]
        win = full - g["decode"] + g["decode_window"]
        fps, fps_win = (H100_BF16_PEAK_TFLOPS * 1e3 / t for t in (full, win))
        print(f"| {label} | {steps} | {full / 1e3:.2f} | {fps:.0f} | {win / 1e3:.2f} | {fps_win:.0f} |")
        rows.append({"setting": label, "steps": steps, "gflop": full, "gflop_window": win, "fps": fps})
    return {"stages_gflop": g, "window": list(window), "peak_tflops": H100_BF16_PEAK_TFLOPS, "projection": rows}


def flop_config(config: Path | None) -> ModelConfig | None:
    """The full-size model config the FLOPs are counted for: ``config`` (never the tiny widths), else the paper's."""
    return None if config is None else load_config(config, ["model.first_stage.ckpt_path=null"]).model


def build_model(
    tiny: bool, device: torch.device, config: Path | None = None, overrides: Sequence[str] = ()
) -> DiffTalkModel:
    """The benchmark's model with random weights: ``config`` (default: the packaged paper config), with the tiny
    config's widths on top for ``tiny``, then ``overrides`` (``key.sub=value``)."""
    paths = [config or default_config_path(), *([TINY_CONFIG] if tiny else [])]
    overrides = ["model.first_stage.ckpt_path=null", f"model.conditioning.audio_feature_kind={FEATURES}", *overrides]
    model = DiffTalkModel(load_config(paths, overrides).model)
    return model.eval().requires_grad_(False).to(device)


def first_frames(speech: Speech, n: int) -> Speech:
    """The first ``n`` frames of ``speech`` (for warm-up runs)."""
    k = round(n / speech.fps * SAMPLE_RATE)
    m = round(n / speech.fps * speech.mux_rate)
    return dataclasses.replace(
        speech, samples=speech.samples[:k], windows=speech.windows[:n], mux_samples=speech.mux_samples[:m]
    )


def prepare_video_cached(pipe: LipSyncPipeline, video: Path, detections: Path | None) -> tuple[PreparedVideo, str]:
    """``pipe.prepare_video(video)``; with ``detections``, reuse the face boxes and landmarks saved there.

    The saved detections let a machine without the dlib 68-point predictor (a GPU box with no network) time
    generation on the same clip: frames are still decoded here, only face detection is skipped. A missing file is
    written from a full preprocessing run.
    """
    if detections is None or not detections.is_file():
        prepared = pipe.prepare_video(video)
        if detections is not None:
            detections.parent.mkdir(parents=True, exist_ok=True)
            np.savez(detections, boxes=prepared.boxes, landmarks=prepared.landmarks, missing=prepared.missing)
        return prepared, "face detection included"
    saved = np.load(detections)
    frames = np.stack([rgb for _, rgb in zip(range(len(saved["landmarks"])), iter_frames(video, FPS))])
    if len(frames) != len(saved["landmarks"]):
        raise SystemExit(f"error: {detections}: {len(saved['landmarks'])} frames saved, the clip has {len(frames)}")
    prepared = PreparedVideo(
        video, frames, saved["boxes"], saved["landmarks"], saved["missing"], pipe.options.crop_size, FPS
    )
    return prepared, f"face detection skipped (landmarks from {detections.name})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny model (CPU smoke runs) instead of the paper config")
    p.add_argument(
        "--config", type=Path, default=None, help="model config, e.g. configs/latent-diffusion/talking-512.yaml"
    )
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)"
    )
    p.add_argument("--frames", type=int, default=100, help="output frames (= video frames = speech frames)")
    p.add_argument("--steps", type=int, default=None, help="override the steps of every setting (smoke runs)")
    p.add_argument("--batch-size", type=int, default=LipSyncOptions().batch_size, help="batch of the fast setting")
    p.add_argument("--crop-size", type=int, default=LipSyncOptions().crop_size, help="face crop side")
    p.add_argument("--compile", action="store_true", help="also time the fast setting with torch.compile")
    p.add_argument("--decode-window", action="store_true", help="also time the fast setting with --decode-window")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count and the H100 projection")
    p.add_argument("--warmup", type=int, default=None, help="warm-up frames per setting (default: a batch on GPU)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument(
        "--detections",
        type=Path,
        default=None,
        help="reuse the face boxes and landmarks in this .npz (written there by a run where it is missing)",
    )
    p.add_argument(
        "--detections-only",
        action="store_true",
        help="only write --detections for the clip (face detection needs the dlib predictor) and exit",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.add_argument(
        "--student",
        type=Path,
        default=None,
        help="a distilled student's checkpoint (.ckpt or slim .safetensors): also time its recorded sampler",
    )
    p.add_argument(
        "--student-batches", type=batches, default=[16, 32, 64], help="batch sizes of the student's rows (16,32,64)"
    )
    p.add_argument(
        "--video-size",
        type=video_size,
        default=None,
        help="frame size of the clip: 288 (default), 480p, 720p, 1080p or WxH",
    )
    p.add_argument("--cpu-threads", type=int, default=None, help="the pipeline's CPU workers (default: min(8, CPUs))")
    p.add_argument(
        "--settings", type=setting_names, default=SETTINGS, help="which rows: reference,fast,student (default all)"
    )
    p.add_argument("--no-stages", action="store_true", help="skip the per-stage tables (one serial run per setting)")
    args = p.parse_args(argv)
    if args.detections_only and args.detections is None:
        p.error("--detections-only needs --detections FILE")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)

    tiny = args.tiny or args.detections_only  # face detection needs no real model
    model = build_model(tiny, device, args.config, args.overrides)
    side = model.config.first_stage.resolution
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = write_video(tmp / "person.mp4", seconds=args.frames / FPS, fps=int(FPS), size=args.video_size)
        wav = write_wav(tmp / "speech.wav", seconds=args.frames / FPS)
        pipe = LipSyncPipeline(model, audio_features=FEATURES)
        t0 = time.perf_counter()
        speech = pipe.prepare_speech(wav)
        prepared, how = prepare_video_cached(pipe, video, args.detections)
        if args.detections_only:
            print(f"{args.detections}: face boxes and landmarks of the {len(prepared.frames)}-frame clip ({how})")
            return 0
        pre_s = time.perf_counter() - t0
        decode_s = decode_seconds(video, speech.n_frames)
        size = f"{prepared.width}x{prepared.height}"

        print(
            f"device: {name}; model: {'tiny' if args.tiny else 'paper'} config {args.config or ''}, random weights; "
            f"{speech.n_frames} frames of {size} video, face at {side}x{side} (crop {args.crop_size}); preprocess "
            f"{pre_s:.2f} s ({speech.n_frames / pre_s:.1f} frames/s, {how}); decoding the frames alone "
            f"{1e3 * decode_s / speech.n_frames:.1f} ms per frame"
        )
        print(
            "| setting | frames/s (preprocess excluded) | frames/s end to end (video decode included, face detection "
            "excluded) | frames/s (preprocess included) |"
        )
        print("| --- | ---: | ---: | ---: |")
        rows = []
        for options in settings(args):
            options = dataclasses.replace(options, cpu_threads=args.cpu_threads)
            label = describe(options, device)
            pipe.options = options
            warm = args.warmup if args.warmup is not None else (options.batch_size if device.type == "cuda" else 0)
            if warm:
                pipe.run(
                    prepared,
                    first_frames(speech, min(warm, speech.n_frames)),
                    tmp / "warmup.mp4",
                    overwrite=True,
                    progress=False,
                )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            result = pipe.run(prepared, speech, tmp / "out.mp4", overwrite=True, progress=False)
            total = pre_s + result.generate_s
            e2e = result.n_frames / (decode_s + result.generate_s)
            print(f"| {label} | {result.fps_generate:.2f} | {e2e:.2f} | {result.n_frames / total:.2f} |")
            rows.append(
                {
                    "setting": label,
                    "batch_size": options.batch_size,
                    "compile": options.compile,
                    "fps_generate": result.fps_generate,
                    "fps_end_to_end": e2e,
                    "fps_total": result.n_frames / total,
                }
            )
        if args.student is None:
            print("| student (few-step distilled) | not timed | give --student CKPT | |")
        if not args.no_stages:
            for options, row in zip(settings(args), rows):
                pipe.options = options
                print(f"\n{row['setting']}")
                row["stages"] = stage_table(pipe, prepared, speech, tmp / "stages.mp4")
        flops = None if args.no_flops else print_flops(prepared, args.crop_size, flop_config(args.config))
    if args.json:
        payload = {
            "device": name,
            "frames": speech.n_frames,
            "video_size": size,
            "preprocess_s": pre_s,
            "decode_s": decode_s,
            "preprocess": how,
            "flops": flops,
        }
        args.json.write_text(json.dumps({**payload, "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
