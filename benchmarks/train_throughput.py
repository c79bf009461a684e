"""Training throughput of DiffTalk: samples/s and peak memory, reference-equivalent path vs our fastest path.

    python benchmarks/train_throughput.py                    # paper config, batch 8, on the GPU when present
    python benchmarks/train_throughput.py --tiny --steps 2   # CPU smoke test (tiny model)

Both paths run the product's own trainer (``benchmarks/product_training.py``: the Lightning module and
``pl.Trainer`` that ``talkingface train`` builds, with its precision plugin, gradient clipping at 0.1, AdamW and
EMA update) on random batches held in memory, with the config options that make each path:

- ``reference``: what the reference trainer does per step: ``train.precision=32-true``, the frozen first stage
  encodes the target, the reference and the masked image (3 images per sample), unfused AdamW, contiguous memory.
- ``fast``: ``train.precision=bf16-mixed``, first-stage latents from the latent cache (no image encoding),
  ``train.channels_last``, ``train.fused_optimizer`` (CUDA), ``train.tf32``, ``train.compile=full`` (CUDA;
  ``--no-compile`` to skip, ``--compile blocks`` for the block-by-block mode).

Attention is PyTorch's scaled-dot-product attention in both (the model always uses it).
Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU, the process's peak RSS on CPU (cumulative, so the
second path's CPU figure includes the first's).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

from product_training import add_model_options, chosen_model, fit_steps, free_memory  # noqa: E402

REFERENCE_SAMPLES_PER_SEC = 24.2  # the reference trainer on one H100 (from the issue); not measured here


@dataclass
class PathSpec:
    name: str
    overrides: tuple[str, ...]
    cached_latents: bool


@dataclass
class Result:
    name: str
    samples_per_sec: float
    peak_memory_mib: float
    step_ms: float
    loss: float


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_path(
    spec: PathSpec, config: Path, batch_size: int, steps: int, warmup: int, device: torch.device, overrides: list[str]
) -> Result:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = fit_steps(config, [*overrides, *spec.overrides], batch_size, warmup + steps, device, spec.cached_latents)
    step_s = times.mean_s(warmup)
    return Result(spec.name, batch_size / step_s, _peak_mib(device), 1000 * step_s, times.losses[-1])


def run_isolated(
    spec: PathSpec,
    config: Path,
    batch_size: int,
    steps: int,
    warmup: int,
    device: torch.device,
    overrides: list[str],
) -> Result:
    """``run_path``, then free its model and optimizer before the next path."""
    result = run_path(spec, config, batch_size, steps, warmup, device, overrides)
    free_memory(device)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(parser)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 on GPU, 1 on CPU)")
    parser.add_argument("--paths", default="reference,fast", help="comma-separated: reference, fast")
    parser.add_argument("--no-compile", action="store_true", help="fast path without torch.compile")
    parser.add_argument(
        "--compile", choices=("full", "blocks"), default="full", help="the fast path's train.compile on CUDA"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    config, args.batch_size = chosen_model(args)
    warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)
    compile_mode = "false" if args.no_compile or device.type != "cuda" else args.compile
    specs = {
        "reference": PathSpec(
            "reference",
            (
                "train.precision=32-true",
                "train.channels_last=false",
                "train.fused_optimizer=false",
                "train.tf32=false",
                "train.compile=false",
            ),
            cached_latents=False,
        ),
        "fast": PathSpec(
            "fast",
            (
                "train.precision=bf16-mixed",
                "train.channels_last=true",
                "train.fused_optimizer=true",
                "train.tf32=true",
                f"train.compile={compile_mode}",
            ),
            cached_latents=True,
        ),
    }
    names = [n.strip() for n in args.paths.split(",") if n.strip()]
    unknown = [n for n in names if n not in specs]
    if unknown:
        parser.error(f"unknown paths {unknown}; use {list(specs)}")

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"DiffTalk training throughput | {config.name} | batch {args.batch_size} | {gpu} | torch {torch.__version__}")
    results = [
        run_isolated(specs[n], config, args.batch_size, args.steps, warmup, device, args.overrides) for n in names
    ]
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
