"""Streaming latency and throughput of ``LipSyncStream`` with the shipped synthetic demo model, against offline.

    python benchmarks/stream_latency.py                        # 20/40/100/200 ms chunks, fast and real-time pace
    python benchmarks/stream_latency.py --seconds 2 --steps 4  # quicker

The demo's media (a synthetic portrait clip and another clip's speech, made in code) are lip-synced offline
(``LipSyncPipeline.generate``: the frames/s baseline), then streamed in chunks of each size, once as fast as
possible and once at the pace of the wall clock (a chunk is pushed when its last sample "has been spoken"). Per
setting: the time ``push`` took per chunk (p50 / p95 / max), the compute time of the frames (from the call that
returned a frame to its return), the audio lag of the frames (speech received when a
frame came out minus its time, p50 / max: at least the 280 ms look-ahead), the wall latency of the frames (from the
arrival of their first sample to their return, p50 / p95 / max: meaningful at real-time pace; fed as fast as
possible it is the queue behind the compute), frames/s of compute and the real-time factor
(compute / audio time: below 1 keeps up with live speech). Then the frames against the offline ones: with the
whole-file log-mel statistics (``MelStats.of_speech``, must be equal) and with running statistics (the live
default: max abs difference of the features and of the frames, PSNR of the frames).

CPU threads: ``--threads`` (default 1; say in the figures that the machine may be shared).

``--model paper-student --device cuda``: the paper config (random weights: the cost does not depend on them)
sampled as the shipped 4-step student is (DDIM on its recorded grid), bf16 on the GPU: the real-time factor a
trained paper-size student has there. ``--json`` also writes the rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from talkingface.constants import SAMPLE_RATE  # noqa: E402
from talkingface.demo_assets import demo_model_paths, demo_student_path  # noqa: E402
from talkingface.inference import LipSyncOptions, LipSyncPipeline, LipSyncStream, MelStats  # noqa: E402
from talkingface.inference.stream import speech_samples  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk import (  # noqa: E402
    DiffTalkModel,
    get_difftalk_inference,  # noqa: E402
    load_config,
)
from talkingface.model.image_driven_talkingface.DiffTalk.config import default_config_path  # noqa: E402
from talkingface.synthetic.demo import DEMO_CROP_SIZE, SidecarDetector, make_sample_media  # noqa: E402
from talkingface.synthetic.generate import sidecar_path  # noqa: E402

CHUNKS_MS = (20, 40, 100, 200)


def play(stream: LipSyncStream, samples: np.ndarray, chunk_ms: float, realtime: bool) -> tuple[list[np.ndarray], float]:
    """Push ``samples`` in ``chunk_ms`` chunks (at the wall clock's pace when ``realtime``); the frames and the
    wall time from the first push to the last frame."""
    step = int(round(chunk_ms / 1000 * SAMPLE_RATE))
    frames: list[np.ndarray] = []
    began = time.perf_counter()
    for pos in range(0, len(samples), step):
        chunk = samples[pos : pos + step]
        spoken = began + (pos + len(chunk)) / SAMPLE_RATE  # when a live source would have the chunk
        if realtime:
            time.sleep(max(0.0, spoken - time.perf_counter()))
        frames += stream.push(chunk, arrived=spoken if realtime else None)
    frames += stream.close()
    return frames, time.perf_counter() - began


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def build(args: argparse.Namespace) -> tuple[DiffTalkModel, LipSyncOptions, str]:
    """The model, the options and a description of ``--model``."""
    base = {"batch_size": args.batch_size, "crop_size": DEMO_CROP_SIZE}
    config, ckpt, first_stage = demo_model_paths()
    if args.model == "demo":
        model = get_difftalk_inference(config, ckpt, first_stage, device=args.device)
        return model, LipSyncOptions(steps=args.steps, sampler="dpm++", **base), f"demo model, dpm++ {args.steps} steps"
    student = get_difftalk_inference(config, demo_student_path(), first_stage, device=args.device)
    recorded = student.sampling
    options = LipSyncOptions(sampler=recorded.sampler, steps=recorded.steps, timesteps=recorded.timesteps, **base)
    grid = f"{recorded.sampler} {recorded.steps} steps (timesteps {list(recorded.timesteps)})"
    if args.model == "student":
        return student, options, f"the demo model's shipped student, {grid}"
    overrides = ["model.first_stage.ckpt_path=null", "model.conditioning.audio_feature_kind=mel"]
    torch.manual_seed(0)
    paper = DiffTalkModel(load_config(default_config_path(), overrides).model).eval().requires_grad_(False)
    return paper.to(args.device), options, f"paper config (random weights), {grid}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=4.0, help="length of the speech clip")
    p.add_argument("--steps", type=int, default=20, help="DPM++ steps (the demo's 20)")
    p.add_argument("--batch-size", type=int, default=1, help="frames per batch, offline and streamed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--chunks", type=int, nargs="+", default=list(CHUNKS_MS), help="chunk lengths (ms)")
    p.add_argument("--no-realtime", action="store_true", help="skip the real-time-paced runs")
    p.add_argument(
        "--model",
        choices=("demo", "student", "paper-student"),
        default="demo",
        help="demo: the synthetic demo model (dpm++ --steps); student: its shipped 4-step student; paper-student: "
        "the paper config (random weights) on the student's grid",
    )
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    model, options, what = build(args)
    with tempfile.TemporaryDirectory(prefix="talkingface-stream-") as tmp:
        video_path, speech_path = make_sample_media(Path(tmp), args.seconds)
        detector = SidecarDetector(np.load(sidecar_path(video_path)))
        pipe = LipSyncPipeline(model, options=options, detector=detector)  # type: ignore[arg-type]
        video = pipe.prepare_video(video_path)
        speech = pipe.prepare_speech(speech_path)
        samples = speech_samples(speech_path)
        t0 = time.perf_counter()
        offline = list(pipe.generate(video, speech))
        offline_s = time.perf_counter() - t0
    n = len(offline)
    print(
        f"\n{what}, {device_name(args.device)}, {torch.get_num_threads()} CPU thread(s), {n} frames ({n / 25:.2f} s "
        f"of speech), batch {args.batch_size}\n"
    )
    print(f"offline pipeline (baseline): {n / offline_s:.2f} frames/s, real-time factor {offline_s / (n / 25):.2f}\n")
    print(
        "| chunk | pace | push time p50 / p95 / max (ms) | frame compute p50 / p95 / max (ms) "
        "| frame audio lag p50 / max (ms) | frame latency p50 / p95 / max (ms) | frames/s | real-time factor |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows: list[dict] = []
    for chunk_ms in args.chunks:
        for realtime in (False,) if args.no_realtime else (False, True):
            stream = LipSyncStream(pipe, video)
            frames, _ = play(stream, samples, chunk_ms, realtime)
            assert len(frames) == n
            s = stream.stats.summary()
            ms = {k: 1000 * v for k, v in s.items() if k.endswith("_s")}
            print(
                f"| {chunk_ms} ms | {'real time' if realtime else 'fast'} "
                f"| {ms['chunk_p50_s']:.0f} / {ms['chunk_p95_s']:.0f} / {ms['chunk_max_s']:.0f} "
                f"| {ms['compute_p50_s']:.0f} / {ms['compute_p95_s']:.0f} / {ms['compute_max_s']:.0f} "
                f"| {ms['audio_lag_p50_s']:.0f} / {ms['audio_lag_max_s']:.0f} "
                f"| {ms['latency_p50_s']:.0f} / {ms['latency_p95_s']:.0f} / {ms['latency_max_s']:.0f} "
                f"| {s['fps']:.2f} | {s['rtf']:.2f} |"
            )
            rows.append({"chunk_ms": chunk_ms, "realtime": realtime, **s})
    if args.json:
        payload = {"device": device_name(args.device), "model": what, "frames": n, "offline_fps": n / offline_s}
        args.json.write_text(json.dumps({**payload, "rows": rows}, indent=2) + "\n")
    exact = LipSyncStream(pipe, video, normalization=MelStats.of_speech(samples))
    frames, _ = play(exact, samples, 40, False)
    worst = max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(frames, offline))
    print(f"\nwhole-file statistics vs offline: max abs difference {worst} levels over {n} frames")
    used: list[np.ndarray] = []  # the windows the running statistics gave
    generate_batch = pipe.generate_batch

    def recording(gen: object, src: np.ndarray, windows: np.ndarray) -> tuple:
        used.append(windows)
        return generate_batch(gen, src, windows)  # type: ignore[arg-type]

    pipe.generate_batch = recording  # type: ignore[method-assign]
    frames, _ = play(LipSyncStream(pipe, video), samples, 40, False)
    diffs = np.array([np.abs(a.astype(int) - b).max() for a, b in zip(frames, offline)])
    psnrs = np.array([psnr(a, b) for a, b in zip(frames, offline)])
    feat = np.abs(np.concatenate(used) - speech.windows).reshape(n, -1).max(axis=1)
    print(
        f"running statistics vs offline: frame max abs difference {diffs.max()} levels (median {np.median(diffs):.0f}),"
        f" PSNR min {psnrs.min():.1f} dB / median {np.median(psnrs):.1f} dB (whole frame); after the first second: "
        f"max {diffs[25:].max() if n > 25 else 0} levels, PSNR min {psnrs[25:].min() if n > 25 else float('inf'):.1f}"
        f" dB; features max abs difference {feat.max():.2f} "
        f"(after the first second {feat[25:].max() if n > 25 else 0:.2f})"
    )


if __name__ == "__main__":
    main()
