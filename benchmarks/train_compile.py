"""What ``train.compile`` costs: the first training step (which compiles) and the step time after, eager vs
compiled block by block (``train.compile=blocks``) vs the whole UNet (``train.compile=full``), in the same run.

    python benchmarks/train_compile.py                                   # paper config, batch 8, GPU, bf16
    python benchmarks/train_compile.py --batch-size 64 --modes eager,blocks --timeout 600
    python benchmarks/train_compile.py --tiny --batch-size 2 --steps 3   # CPU (needs a C compiler)

Each mode runs the product's own trainer (``benchmarks/product_training.py``: the Lightning module and
``pl.Trainer`` of ``talkingface train``, with ``train.compile`` set to the mode, which the trainer applies with its
:func:`~talkingface.training.speed.compile_unet`) on the same random cached-latent batches, from the same seed, so
the first step's noise and timesteps are the same in every mode and its loss is compared with eager's. Inductor's
on-disk caches are off unless ``--cache`` (a second run with them would show warm-cache compile times); dynamo is
reset between modes. ``--timeout`` stops a mode whose first step takes longer (reported as such; the process then
exits, as a compile cannot be interrupted).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch._dynamo
import torch._inductor.config
from torch._dynamo.utils import counters

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from product_training import add_model_options, chosen_model, fit_steps, free_memory  # noqa: E402

from talkingface.training.speed import unet_blocks  # noqa: E402

MODES = {"eager": False, "blocks": "blocks", "full": "full"}  # --modes name -> train.compile


@dataclass
class ModeResult:
    mode: str
    first_step_s: float  # wall time of the first step (compiles forward and backward)
    step_ms: float  # mean of the timed steps after the warm-up
    compile_s: float | None  # first step minus a steady step: what compiling cost (None: eager)
    graphs: int  # graphs dynamo compiled (blocks alike share one)
    blocks: int  # the UNet's blocks (train.compile=blocks compiles each)
    loss_first_step: float
    loss_diff_vs_eager: float | None = None


def run_mode(
    name: str,
    config: Path,
    overrides: list[str],
    batch_size: int,
    steps: int,
    warmup: int,
    device: torch.device,
    bf16: bool,
    backend: str = "inductor",
) -> ModeResult:
    torch._dynamo.reset()
    counters.clear()
    precision = "bf16-mixed" if bf16 else "32-true"
    mode = {False: "false", "blocks": "blocks", "full": "full"}[MODES[name]]
    times = fit_steps(
        config,
        [*overrides, f"train.precision={precision}", f"train.compile={mode}"],
        batch_size,
        1 + warmup + steps,
        device,
        cached=True,
        compile_backend=backend,
    )
    step_s = times.mean_s(1 + warmup)
    first = times.seconds[0]
    compile_s = None if MODES[name] is False else max(first - step_s, 0.0)
    graphs = int(counters["stats"]["unique_graphs"])
    assert times.module is not None
    blocks = len(unet_blocks(times.module.model.diffusion_model))
    return ModeResult(name, first, 1000 * step_s, compile_s, graphs, blocks, times.losses[0])


def run_with_timeout(timeout: float | None, fn: Callable[[], ModeResult]) -> ModeResult | None:
    """``fn()``, or None when it runs past ``timeout`` seconds (it keeps running in a daemon thread)."""
    if not timeout:
        return fn()
    box: list[ModeResult | BaseException] = []
    worker = threading.Thread(target=lambda: box.append(_call(fn)), daemon=True)
    worker.start()
    worker.join(timeout)
    if not box:
        return None
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _call(fn: Callable[[], ModeResult]) -> ModeResult | BaseException:
    try:
        return fn()
    except BaseException as err:  # handed to the main thread
        return err


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p)
    p.add_argument("--steps", type=int, default=10, help="timed steps per mode after the first")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps between the first and the timed ones")
    p.add_argument("--modes", default="eager,blocks,full", help=f"comma-separated: {', '.join(MODES)}")
    p.add_argument(
        "--precision", choices=("auto", "bf16", "fp32"), default="auto", help="auto: bf16 autocast on CUDA, else fp32"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: no code generation)")
    p.add_argument("--cache", action="store_true", help="keep inductor's on-disk caches (warm-cache compile times)")
    p.add_argument("--timeout", type=float, default=None, help="give up on a mode after this many seconds")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.modes.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODES]
    if unknown or not names:
        p.error(f"argument --modes: unknown {unknown or names}; use {', '.join(MODES)}")
    if args.steps < 1 or args.warmup < 0:
        p.error("argument --steps: at least 1 (and --warmup at least 0)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.cache:
        torch._inductor.config.force_disable_caches = True

    device = torch.device(args.device)
    config, batch_size = chosen_model(args)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"DiffTalk training-step compile | {config.name} | batch {batch_size} | {'bf16' if bf16 else 'fp32'} | "
        f"{name} | torch {torch.__version__} | {args.backend} | {time.strftime('%Y-%m-%d')}",
        flush=True,
    )
    results: list[ModeResult] = []
    timed_out = []
    for mode in names:

        def one(m: str = mode) -> ModeResult:
            return run_mode(m, config, args.overrides, batch_size, args.steps, args.warmup, device, bf16, args.backend)

        r = run_with_timeout(args.timeout, one)
        free_memory(device)
        if r is None:
            timed_out.append(mode)
            print(f"{mode}: first step not done after {args.timeout:.0f} s (--timeout); stopped", flush=True)
            break  # its compile goes on in the background: nothing later would be timed fairly
        results.append(r)
        print(f"{mode}: first step {r.first_step_s:.1f} s, then {r.step_ms:.1f} ms/step", flush=True)
    eager = next((r for r in results if r.mode == "eager"), None)
    for r in results:
        r.loss_diff_vs_eager = abs(r.loss_first_step - eager.loss_first_step) if eager else None
    print(
        f"{'mode':<8} {'first step s':>12} {'compile s':>10} {'step ms':>9} {'speed':>7} {'graphs':>7} "
        f"{'loss step 1':>12} {'|dloss|':>8}"
    )
    for r in results:
        compile_s = f"{r.compile_s:.1f}" if r.compile_s is not None else "-"
        speed = f"{eager.step_ms / r.step_ms:.2f}x" if eager else "-"
        diff = f"{r.loss_diff_vs_eager:.1e}" if r.loss_diff_vs_eager is not None else "-"
        print(
            f"{r.mode:<8} {r.first_step_s:>12.1f} {compile_s:>10} {r.step_ms:>9.1f} {speed:>7} {r.graphs:>7} "
            f"{r.loss_first_step:>12.6f} {diff:>8}"
        )
    print(
        f"compile s: first step minus one later step; speed: eager's step time over the mode's; graphs: compiled by "
        f"dynamo (the UNet has {results[0].blocks if results else '?'} blocks); |dloss|: the first step's loss vs eager"
    )
    if args.json:
        payload = {
            "config": str(config),
            "batch_size": batch_size,
            "precision": "bf16" if bf16 else "fp32",
            "device": name,
            "torch": torch.__version__,
            "backend": args.backend,
            "inductor_caches": args.cache,
            "results": [asdict(r) for r in results],
            "timed_out": timed_out,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    if timed_out:
        sys.stdout.flush()
        os._exit(3)  # the compiling thread cannot be stopped
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
