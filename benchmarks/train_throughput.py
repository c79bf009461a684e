"""Training throughput of DiffTalk: samples/s and peak memory, reference-equivalent path vs our fastest path.

    python benchmarks/train_throughput.py                    # paper config, batch 8, on the GPU when present
    python benchmarks/train_throughput.py --tiny --steps 2   # CPU smoke test (tiny model)

Both paths run the same full training step on synthetic random batches: forward, simple eps loss, backward,
gradient clipping at 0.1, AdamW step, EMA update.

- ``reference``: what the reference trainer does per step: fp32, the frozen first stage encodes the target, the
  reference and the masked image (3 x 256 x 256 images per sample), unfused AdamW, contiguous memory format.
- ``fast``: bf16 autocast, first-stage latents from the latent cache (no image encoding), channels-last, fused
  AdamW (CUDA), TF32 matmuls, ``torch.compile`` of the UNet (CUDA; ``--no-compile`` to skip).

Attention is PyTorch's scaled-dot-product attention in both (the model always uses it).
Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU, the process's peak RSS on CPU (cumulative, so the
second path's CPU figure includes the first's).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from talkingface.training.config import load_training_config  # noqa: E402
from talkingface.training.module import LatentDiffusion  # noqa: E402

PAPER_CONFIG = ROOT / "configs" / "latent-diffusion" / "talking.yaml"
TINY_CONFIG = ROOT / "configs" / "latent-diffusion" / "talking-tiny.yaml"
REFERENCE_SAMPLES_PER_SEC = 24.2  # the reference trainer on one H100 (from the issue); not measured here


@dataclass
class PathSpec:
    name: str
    bf16: bool
    cached_latents: bool
    channels_last: bool
    fused_adamw: bool
    tf32: bool
    compile: bool


@dataclass
class Result:
    name: str
    samples_per_sec: float
    peak_memory_mib: float
    step_ms: float
    loss: float


def synthetic_batch(model: LatentDiffusion, batch_size: int, cached: bool, device: torch.device) -> dict:
    """A random dataset batch: images (B, S, S, 3) in [-1, 1] as the dataset yields them, or cached latents."""
    c = model.config
    g = torch.Generator().manual_seed(0)
    batch = {
        "landmarks": torch.rand(batch_size, c.conditioning.landmark_count, 2, generator=g) * c.first_stage.resolution,
        "audio_smooth": torch.randn(
            batch_size,
            c.conditioning.audio_smooth_windows,
            c.conditioning.audio_window,
            c.conditioning.audio_feature_dim,
            generator=g,
        ),
    }
    if cached:
        shape = (batch_size, c.first_stage.embed_dim, c.unet.image_size, c.unet.image_size)
        for key in ("latent", "reference_latent", "masked_latent"):
            batch[key] = torch.randn(shape, generator=g)
    else:
        s = c.first_stage.resolution
        for key in ("image", "reference_img", "image_mask"):
            batch[key] = torch.rand(batch_size, s, s, 3, generator=g) * 2 - 1
    return {k: v.to(device) for k, v in batch.items()}


def training_step(
    model: LatentDiffusion,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    bf16: bool,
    device: torch.device,
) -> Callable[[], torch.Tensor]:
    """One full training step as the trainer runs it (loss, backward, clipping at 0.1, optimiser, EMA), for the
    speed benchmarks (``train_throughput.py``, ``train_compile.py``); returns the detached loss."""
    autocast: Callable[[], contextlib.AbstractContextManager] = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    )

    def step() -> torch.Tensor:
        with autocast():
            loss, _ = model.shared_step(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.model_ema(model.model)
        return loss.detach()

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_path(spec: PathSpec, config: Path, batch_size: int, steps: int, warmup: int, device: torch.device) -> Result:
    torch.backends.cuda.matmul.allow_tf32 = spec.tf32
    torch.set_float32_matmul_precision("high" if spec.tf32 else "highest")
    torch.manual_seed(0)
    cfg = load_training_config(config)
    model = LatentDiffusion(
        cfg.model, learning_rate=1e-5, channels_last=spec.channels_last, fused_optimizer=spec.fused_adamw
    )
    model.to(device).train()
    if spec.compile:
        model.model.diffusion_model.compile()
    params = [p for p in model.trainable_parameters() if p.requires_grad]
    fused = spec.fused_adamw and device.type == "cuda"
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=fused or None)
    batch = synthetic_batch(model, batch_size, spec.cached_latents, device)
    step = training_step(model, batch, optimizer, params, spec.bf16, device)

    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _sync(device)
    elapsed = time.perf_counter() - start
    return Result(spec.name, batch_size * steps / elapsed, _peak_mib(device), 1000 * elapsed / steps, float(loss))


def run_isolated(
    spec: PathSpec, config: Path, batch_size: int, steps: int, warmup: int, device: torch.device
) -> Result:
    """``run_path``, then free its model and optimizer before the next path."""
    result = run_path(spec, config, batch_size, steps, warmup, device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny model (configs/latent-diffusion/talking-tiny.yaml)")
    parser.add_argument("--config", type=Path, default=None, help="config YAML (default: the paper config)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 8 (2 with --tiny)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 on GPU, 1 on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--paths", default="reference,fast", help="comma-separated: reference, fast")
    parser.add_argument("--no-compile", action="store_true", help="fast path without torch.compile")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    config = args.config or (TINY_CONFIG if args.tiny else PAPER_CONFIG)
    if args.batch_size is None:
        args.batch_size = 2 if args.tiny else 8
    warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)
    specs = {
        "reference": PathSpec("reference", False, False, False, False, False, False),
        "fast": PathSpec("fast", True, True, True, True, True, device.type == "cuda" and not args.no_compile),
    }
    names = [n.strip() for n in args.paths.split(",") if n.strip()]
    unknown = [n for n in names if n not in specs]
    if unknown:
        parser.error(f"unknown paths {unknown}; use {list(specs)}")

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"DiffTalk training throughput | {config.name} | batch {args.batch_size} | {gpu} | torch {torch.__version__}")
    results = [run_isolated(specs[n], config, args.batch_size, args.steps, warmup, device) for n in names]
    print(f"{'path':<10} {'samples/s':>10} {'step ms':>9} {'peak MiB':>9} {'loss':>8}")
    for r in results:
        print(f"{r.name:<10} {r.samples_per_sec:>10.2f} {r.step_ms:>9.1f} {r.peak_memory_mib:>9.0f} {r.loss:>8.4f}")
    by_name = {r.name: r for r in results}
    if "reference" in by_name and "fast" in by_name:
        print(
            f"speed-up fast / reference: {by_name['fast'].samples_per_sec / by_name['reference'].samples_per_sec:.2f}x"
        )
    if args.json:
        payload = {
            "config": str(config),
            "batch_size": args.batch_size,
            "device": gpu,
            "results": [vars(r) for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
