"""Learnability benchmark: does audio drive the mouth in our DiffTalk pipeline?

Generates a synthetic talking-face set (python -m talkingface.synthetic) unless --data has one, trains a small first
stage, then the small DiffTalk (configs/latent-diffusion/synthetic.yaml) twice: with the real audio and with the
audio shuffled across frames (control). On held-out identities it reports the Pearson correlation between the
generated and the true mouth opening over time, and PSNR/SSIM of the mouth box.

    python benchmarks/learnability.py --out runs/learnability                      # CPU, default sizes
    python benchmarks/learnability.py --out runs/smoke --smoke                     # a few steps (tests)
    python benchmarks/learnability.py --out runs/l --variants real --export talkingface/synthetic/assets
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from talkingface.data.layout import DatasetLayout  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import load_first_stage  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk.config import default_config_path, load_config  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk.model import build_first_stage  # noqa: E402
from talkingface.synthetic.cli import DATASET_DIR  # noqa: E402
from talkingface.synthetic.cli import main as synthetic_main  # noqa: E402
from talkingface.synthetic.export import export_demo_model  # noqa: E402
from talkingface.synthetic.first_stage import save_first_stage, train_first_stage  # noqa: E402
from talkingface.synthetic.learn import (  # noqa: E402
    build_model,
    evaluate_heldout,
    load_train_frames,
    train_diffusion,
    video_counts,
)

log = logging.getLogger("learnability")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder (report.json, first_stage.pt, model exports)")
    p.add_argument("--data", default=None, help="synthetic set made by talkingface.synthetic (default OUT/data)")
    p.add_argument("--config", default=str(default_config_path("synthetic.yaml")))
    p.add_argument("--identities", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--test-identities", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first-stage", default=None, help="reuse a first stage saved by an earlier run")
    p.add_argument("--first-stage-steps", type=int, default=2500)
    p.add_argument("--first-stage-batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20000, help="diffusion training steps per variant")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's data.batch_size")
    p.add_argument("--lr", type=float, default=None, help="default: the config's base_learning_rate")
    p.add_argument("--variants", default="real,control", help="comma list of real, control")
    p.add_argument("--eval-frames", type=int, default=100, help="held-out frames per identity")
    p.add_argument("--sample-steps", type=int, default=20, help="DPM-Solver++ steps")
    p.add_argument("--eval-every", type=int, default=4000, help="also evaluate (learning curve) every N steps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--export", default=None, help="write the real model as the demo model into this folder")
    p.add_argument("--smoke", action="store_true", help="tiny data and a few steps (CI)")
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args: argparse.Namespace) -> dict:
    if args.smoke:
        args.identities, args.seconds, args.test_identities = 2, 2.6, 1
        args.first_stage_steps, args.steps, args.eval_frames, args.sample_steps = 2, 3, 4, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else out / "data"
    root = data / DATASET_DIR
    if not DatasetLayout(root).meta_path.is_file():
        synthetic_main(
            [
                "--out",
                str(data),
                "--identities",
                str(args.identities),
                "--seconds",
                str(args.seconds),
                "--seed",
                str(args.seed),
                "--layout",
                "--no-videos",
                "--test-identities",
                str(args.test_identities),
                *(["--no-progress"] if not progress else []),
            ]
        )
    cfg = load_config(args.config)
    size = cfg.model.first_stage.resolution
    train = load_train_frames(root, data / "data_train.txt", size, progress)
    counts = video_counts(root)
    report: dict = {
        "config": args.config,
        "data": str(data),
        "train_frames": len(train.images),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "variants": {},
    }

    fs_path = Path(args.first_stage) if args.first_stage else out / "first_stage.pt"
    if args.first_stage and fs_path.is_file():
        vq = build_first_stage(cfg.model.first_stage)
        holder = torch.nn.Module()
        holder.first_stage_model = vq
        load_first_stage(holder, fs_path)
        report["first_stage"] = {"path": str(fs_path), "reused": True}
    else:
        fs = train_first_stage(
            torch.cat([train.images, train.masked]),
            cfg.model.first_stage,
            steps=args.first_stage_steps,
            batch_size=args.first_stage_batch,
            seed=args.seed,
            progress=progress,
        )
        vq = fs.model
        save_first_stage(vq, fs_path)
        report["first_stage"] = {
            "path": str(fs_path),
            "recon_l1": fs.recon_l1,
            "seconds": round(fs.seconds, 1),
            "steps": args.first_stage_steps,
        }
    # scale_factor = 1 / std of the training frames' latents, the same whether the first stage was trained now or reused
    with torch.no_grad():
        std = float(torch.cat([vq.encode(train.images[i : i + 256]) for i in range(0, len(train.images), 256)]).std())
    report["first_stage"]["latent_std"] = std
    batch = args.batch_size or cfg.data.batch_size
    lr = args.lr or cfg.model.base_learning_rate
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if variant not in ("real", "control"):
            raise SystemExit(f"error: unknown variant {variant!r} (real, control)")
        model = build_model(load_config(args.config), vq, 1.0 / max(std, 1e-6)).to(args.device)
        entry: dict = {"train_steps": args.steps, "batch_size": batch, "lr": lr, "curve": []}
        report["variants"][variant] = entry
        checkpoint = functools.partial(
            _checkpoint, model=model, variant=variant, entry=entry, report=report, args=args, fs_path=fs_path
        )
        stats = train_diffusion(
            model,
            train,
            counts,
            args.steps,
            batch,
            lr,
            shuffle_audio=variant == "control",
            min_distance=cfg.data.reference_min_distance,
            seed=args.seed,
            progress=progress,
            every=args.eval_every,
            on_checkpoint=checkpoint,
        )
        entry["train_seconds"] = round(stats.seconds, 1)
        log.info("%s: trained %d steps in %.0f s", variant, args.steps, stats.seconds)
        if variant == "real" and args.export:
            export_demo_model(model, fs_path, Path(args.export), metrics=entry)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _checkpoint(
    step: int,
    losses: list[float],
    *,
    model: torch.nn.Module,
    variant: str,
    entry: dict,
    report: dict,
    args: argparse.Namespace,
    fs_path: Path,
) -> None:
    """Evaluate on the held-out identities (a point of the learning curve), save the model so far to OUT/<variant>
    (loadable with ``get_difftalk_inference``) and rewrite OUT/report.json."""
    out, data = Path(args.out), Path(report["data"])
    root = data / DATASET_DIR
    t0 = time.perf_counter()
    res = evaluate_heldout(
        model, root, data / "data_test.txt", args.eval_frames, args.sample_steps, seed=args.seed, progress=False
    )
    point = {
        "step": step,
        "correlation": res.correlation,
        "correlation_per_video": res.correlation_per_video,
        "mouth_psnr": res.mouth_psnr,
        "mouth_ssim": res.mouth_ssim,
        "loss": sum(losses[-200:]) / max(len(losses[-200:]), 1),
    }
    entry["curve"].append(point)
    entry.update(
        {
            "correlation": res.correlation,
            "correlation_per_video": res.correlation_per_video,
            "correlation_measure_on_ground_truth": res.correlation_gt_pixels,
            "correlation_measure_through_first_stage": res.correlation_first_stage,
            "mouth_psnr": res.mouth_psnr,
            "mouth_ssim": res.mouth_ssim,
            "eval_frames": res.frames,
            "steps_done": step,
            "eval_seconds": round(time.perf_counter() - t0, 1),
            "final_loss": point["loss"],
            "opening_true": res.opening_true,
            "opening_generated": res.opening_generated,
        }
    )
    log.info(
        "%s @ %d steps: r = %.3f (per video %s), mouth PSNR %.2f dB, SSIM %.3f",
        variant,
        step,
        res.correlation,
        [round(r, 3) for r in res.correlation_per_video],
        res.mouth_psnr,
        res.mouth_ssim,
    )
    # the model so far, loadable with get_difftalk_inference (config.yaml + model.safetensors + first stage)
    export_demo_model(model, fs_path, out / variant, metrics=entry)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    report = run(build_parser().parse_args(argv))
    for name, v in report["variants"].items():
        print(
            f"{name:8s} r={v['correlation']:+.3f}  mouth PSNR={v['mouth_psnr']:.2f} dB  SSIM={v['mouth_ssim']:.3f}"
            f"  train {v['train_seconds']:.0f} s ({v['train_steps']} steps)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
