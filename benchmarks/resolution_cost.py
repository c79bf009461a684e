"""Cost per frame of DiffTalk at 256x256 (vq-f4) and at 512x512 (vq-f8), in one run: FLOPs, then CPU time.

    python benchmarks/resolution_cost.py                     # FLOPs of both paper-size models + CPU time, batch 1
    python benchmarks/resolution_cost.py --no-time           # FLOPs only (a few seconds)
    python benchmarks/resolution_cost.py --tiny --steps 2    # smoke run with the tiny widths

Both models have a 64x64 latent, so the UNet costs the same per step (its input and output layers have 12 and 4
channels instead of 9 and 3); the first stage works on 4x the pixels with one more level. A frame costs ``steps``
UNet evaluations, two first-stage encodes (the target frame and its masked image; the reference frame is encoded once
per video) and one decode.

FLOPs are counted by ``benchmarks/inference_fps.stage_gflops`` (PyTorch's FLOP counter on meta tensors: nothing is
computed). CPU time: one batch of each stage with random weights (the cost does not depend on the weights), the
256 baseline and the 512 model in the same process, taking turns run by run, the best of ``--repeats`` runs kept;
per frame = (steps x UNet + 2 encodes + decode) / batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from inference_fps import stage_gflops  # noqa: E402

from talkingface.constants import DEFAULT_STEPS, REFERENCE_DDIM_STEPS  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkModel, load_config  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk.config import ModelConfig  # noqa: E402

CONFIGS = ROOT / "configs" / "latent-diffusion"
TINY_CONFIG = CONFIGS / "talking-tiny.yaml"
#: The two models compared, baseline first.
MODELS = {
    "256x256 (vq-f4, talking.yaml)": CONFIGS / "talking.yaml",
    "512x512 (vq-f8, talking-512.yaml)": CONFIGS / "talking-512.yaml",
}
#: Steps of the rows: the reference's DDIM, the fast default (DPM-Solver++), a distilled 4-step student.
STEP_ROWS = {"reference-like (ddim)": REFERENCE_DDIM_STEPS, "fast default (dpm++)": DEFAULT_STEPS, "student": 4}


def model_config(path: Path, tiny: bool) -> ModelConfig:
    return load_config([path, *([TINY_CONFIG] if tiny else [])], ["model.first_stage.ckpt_path=null"]).model


def per_frame(stages: dict[str, float], steps: int) -> float:
    """A frame's cost from per-evaluation stage costs: ``steps`` UNet evaluations, 2 encodes, 1 decode."""
    return steps * stages["unet"] + 2 * stages["encode"] + stages["decode"]


class Timed:
    """One model with its inputs for a batch of ``batch`` frames (random weights and inputs)."""

    def __init__(self, cfg: ModelConfig, batch: int) -> None:
        torch.manual_seed(0)
        self.model = model = DiffTalkModel(cfg).eval().requires_grad_(False)
        self.batch = batch
        r, h, c, k = cfg.first_stage.resolution, cfg.unet.image_size, cfg.first_stage.embed_dim, cfg.conditioning
        self.images = torch.rand(2 * batch, 3, r, r) * 2 - 1  # the target frames and their masked images
        self.z = torch.randn(batch, c, h, h)
        audio = torch.randn(batch, k.audio_smooth_windows, k.audio_window, k.audio_feature_dim)
        landmarks = r * torch.rand(batch, k.landmark_count, 2)
        with torch.no_grad():
            self.cond = model.encode_conditions(audio, landmarks, reference_latent=self.z, masked_latent=self.z)
        self.t = torch.full((batch,), 500, dtype=torch.long)

    @torch.no_grad()
    def seconds(self, stage: str) -> float:
        """Seconds per frame (per image for ``encode``) of one run of ``stage`` on the batch."""
        m = self.model
        run = {
            "unet": lambda: m.predict_eps(self.z, self.t, self.cond),
            "encode": lambda: m.encode_first_stage(self.images),
            "decode": lambda: m.decode_first_stage(self.z),
        }[stage]
        t0 = time.perf_counter()
        run()
        return (time.perf_counter() - t0) / (2 * self.batch if stage == "encode" else self.batch)


def stage_seconds(configs: dict[str, ModelConfig], batch: int, repeats: int) -> dict[str, dict[str, float]]:
    """CPU seconds per frame of one UNet evaluation, one encode and one decode of each model: the best of
    ``repeats`` runs, the models taking turns run by run (a shared machine's load then weighs on both alike)."""
    models = {name: Timed(cfg, batch) for name, cfg in configs.items()}
    best: dict[str, dict[str, float]] = {name: {} for name in models}
    for stage in ("unet", "encode", "decode"):
        for _ in range(repeats):
            for name, timed in models.items():
                best[name][stage] = min(best[name].get(stage, float("inf")), timed.seconds(stage))
    return best


def table(title: str, unit: str, costs: dict[str, dict[str, float]], fmt: str) -> list[dict[str, object]]:
    """Print one table (per-stage costs and per-frame totals of both models, with the 512/256 ratio)."""
    (base_name, base), (hi_name, hi) = costs.items()
    print(f"\n{title}")
    print(f"| | {base_name} | {hi_name} | 512 / 256 |")
    print("| --- | ---: | ---: | ---: |")
    rows: list[dict[str, object]] = []
    for key, label in (("unet", "UNet, one evaluation"), ("encode", "first-stage encode, one image"),
                       ("decode", "first-stage decode")):  # fmt: skip
        print(f"| {label} ({unit}) | {base[key]:{fmt}} | {hi[key]:{fmt}} | {hi[key] / base[key]:.2f} |")
        rows.append({"stage": key, "256": base[key], "512": hi[key]})
    fs_base, fs_hi = 2 * base["encode"] + base["decode"], 2 * hi["encode"] + hi["decode"]
    label = f"first stage per frame: 2 encodes + decode ({unit})"
    print(f"| {label} | {fs_base:{fmt}} | {fs_hi:{fmt}} | {fs_hi / fs_base:.2f} |")
    for label, steps in STEP_ROWS.items():
        a, b = per_frame(base, steps), per_frame(hi, steps)
        extra = (b - a) / a
        print(f"| per frame, {label}, {steps} steps ({unit}) | {a:{fmt}} | {b:{fmt}} | {b / a:.2f} ({extra:+.0%}) |")
        rows.append({"setting": label, "steps": steps, "256": a, "512": b, "extra": extra})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="the tiny config's widths (smoke runs)")
    p.add_argument("--no-time", action="store_true", help="count FLOPs only")
    p.add_argument("--batch-size", type=int, default=1, help="frames per timed batch")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per stage and model (the best is kept)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = {name: model_config(path, args.tiny) for name, path in MODELS.items()}
    gflops = {name: stage_gflops(None, 0, cfg)[0] for name, cfg in configs.items()}
    for name, cfg in configs.items():
        with torch.device("meta"):
            m = DiffTalkModel(cfg)
        unet, vq = (sum(q.numel() for q in part.parameters()) / 1e6 for part in (m.model, m.first_stage_model))
        print(f"{name}: UNet {unet:.2f} M parameters, first stage {vq:.1f} M; latent {cfg.unet.image_size}x"
              f"{cfg.unet.image_size}x{cfg.first_stage.embed_dim}")  # fmt: skip
    result: dict[str, object] = {"tiny": args.tiny, "gflops": gflops}
    widths = ", the tiny config's widths" if args.tiny else ""
    title = f"GFLOP per frame, batch 1{widths} (torch.utils.flop_counter, meta tensors)"
    result["flop_rows"] = table(title, "GFLOP", gflops, ".1f")
    if not args.no_time:
        seconds = stage_seconds(configs, args.batch_size, args.repeats)
        ms = {name: {k: 1e3 * v for k, v in s.items()} for name, s in seconds.items()}
        title = (
            f"CPU ms per frame ({torch.get_num_threads()} threads, batch {args.batch_size}, best of {args.repeats}, "
            f"random weights{widths})"
        )
        result["seconds"] = seconds
        result["time_rows"] = table(title, "ms", ms, ".0f")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
