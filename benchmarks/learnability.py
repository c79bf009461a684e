"""Learnability benchmark: does audio drive the mouth when DiffTalk is trained by the product's trainer?

Generates a synthetic talking-face set (python -m talkingface.synthetic) unless --data has one, trains a small first
stage (no real first stage exists offline), builds the trainer's latent cache with the product's command
(``python -m talkingface.training.latent_cache build``), then trains the small DiffTalk of
configs/latent-diffusion/synthetic.yaml with ``trainer/DiffTalkTrainer.py``'s own entry point
(``talkingface.commands.train.main``: the same LightningModule, optimizer, clipping, EMA and data module) twice: with
the real audio, and with ``data.shuffle_audio=true`` (control). Every --eval-every steps and at the end it generates
the held-out identities' mouths through the lip-sync pipeline's frame path and ``DiffTalkModel.inpaint``, and
writes OUT/report.json: pooled and per-identity Pearson r of the generated vs the true mouth opening, mouth
PSNR/SSIM, the first stage's reconstruction error, skin luminance and the mouth's residual opening in pauses.

    python benchmarks/learnability.py --out runs/learnability                      # CPU, default sizes
    python benchmarks/learnability.py --out runs/smoke --smoke                     # a few steps (tests)
    python benchmarks/learnability.py --out runs/l --variants real --export talkingface/synthetic/assets
    python benchmarks/learnability.py --out runs/f8 --config configs/latent-diffusion/synthetic-f8.yaml \
        --compare-with talkingface/synthetic/assets                  # 128 px on a factor-8 first stage vs 64 px

Any config works: the set is generated at frame and crop sides scaled with the config's image side (160 and 128 px at
synthetic.yaml's 64, 320 and 256 at synthetic-f8.yaml's 128), the first stage is built from the config
(``model.first_stage``: factor 4 or 8 alike) and the held-out evaluation runs at the model's side. ``--compare-with
MODEL`` then scores the real model's mouths against another model's (e.g. the 64 px one), upsampled to this side, on
the same held-out frames (``benchmarks/sharpness_512.py``, written to OUT/sharpness.json).

Each variant's trainer run is OUT/<variant>/run (checkpoints, config snapshot, TensorBoard); the model so far is
exported to OUT/<variant>/model at every curve point (loadable with ``get_difftalk_inference``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):  # the package, and sharpness_512 (--compare-with)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from talkingface.commands.cache import main as latent_cache_main  # noqa: E402
from talkingface.commands.synthetic import main as synthetic_main  # noqa: E402
from talkingface.commands.train import main as trainer_main  # noqa: E402
from talkingface.constants import DEMO_STEPS  # noqa: E402
from talkingface.data.layout import DatasetLayout  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import load_first_stage  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk.config import ConfigError, default_config_path  # noqa: E402
from talkingface.model.image_driven_talkingface.DiffTalk.model import build_first_stage  # noqa: E402
from talkingface.synthetic.curve import HeldoutCurve  # noqa: E402
from talkingface.synthetic.export import export_demo_model  # noqa: E402
from talkingface.synthetic.first_stage import save_first_stage, train_first_stage  # noqa: E402
from talkingface.synthetic.generate import (  # noqa: E402
    DEFAULT_CROP_SIZE,
    DEFAULT_FRAME_SIZE,
    measure_ceiling_by_tone,
)
from talkingface.synthetic.learn import SILENCE_TOLERANCE, EvalResult, load_first_stage_images  # noqa: E402
from talkingface.synthetic.output import DATASET_DIR  # noqa: E402
from talkingface.training.config import load_training_config  # noqa: E402

log = logging.getLogger("learnability")

VARIANTS = {"real": "false", "control": "true"}  # variant -> data.shuffle_audio
DEFAULT_SAMPLE_STEPS = DEMO_STEPS
#: The image side of synthetic.yaml, the side at which a set is generated at the generator's default frame and crop
#: sides (DEFAULT_FRAME_SIZE, DEFAULT_CROP_SIZE); other sides scale both.
SYNTHETIC_SIDE = 64


def set_sizes(side: int) -> tuple[int, int]:
    """Frame and crop sides of a set generated for a model of image side ``side``: the generator's defaults (160,
    128) at synthetic.yaml's 64 px, scaled with the side (320 and 256 at 128 px), so the face is drawn at twice the
    model's side, as at 64 px, and reaches the model downsampled, never upsampled."""
    scale = side / SYNTHETIC_SIDE
    return round(DEFAULT_FRAME_SIZE * scale), round(DEFAULT_CROP_SIZE * scale)


def generation_sizes(args: argparse.Namespace, side: int) -> tuple[int, int]:
    """The frame and crop sides of a generated set: --frame-size / --crop-size, else :func:`set_sizes`."""
    frame_size, crop_size = set_sizes(side)
    return args.frame_size or frame_size, args.crop_size or crop_size


def cache_dir(data: Path, config: str | Path) -> Path:
    """The latent cache of a run: ``DATA/latents`` for synthetic.yaml, ``DATA/latents-<config stem>`` for another
    config, so runs of two configs on one set do not meet on one cache (its first stages differ)."""
    stem = Path(config).stem
    return data / ("latents" if stem == "synthetic" else f"latents-{stem}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder (report.json, first_stage.pt, trainer runs, models)")
    p.add_argument("--data", default=None, help="synthetic set made by talkingface.synthetic (default OUT/data)")
    p.add_argument("--config", default=str(default_config_path("synthetic.yaml")))
    p.add_argument("--identities", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--test-identities", type=int, default=8)
    p.add_argument(
        "--frame-size",
        type=int,
        default=None,
        help="video frame side of a generated set (default: 160 x the config's image side / 64)",
    )
    p.add_argument(
        "--crop-size",
        type=int,
        default=None,
        help="saved face-crop side of a generated set (default: 128 x the config's image side / 64; at least the "
        "image side)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--audio-features",
        choices=["mel", "whisper", "wav2vec2"],
        default="mel",
        help="feature backend of a generated set (an existing --data keeps its own); the config's "
        "model.conditioning.audio_feature_kind/_dim follow the dataset's meta.json",
    )
    p.add_argument("--whisper-model", default=None, help="local whisper model folder (--audio-features whisper)")
    p.add_argument("--wav2vec2-model", default=None, help="local wav2vec2 CTC folder (--audio-features wav2vec2)")
    p.add_argument("--first-stage", default=None, help="reuse a first stage saved by an earlier run")
    p.add_argument(
        "--first-stage-steps",
        type=int,
        default=6000,
        help="first-stage training steps (the shipped model's first stage: 6322 steps at batch 64 on a GPU; 2500 at "
        "batch 16 and width 32 lost the darkest skin tones' mouths)",
    )
    p.add_argument("--first-stage-batch", type=int, default=64)
    p.add_argument(
        "--first-stage-device",
        default="cpu",
        help="where the first stage trains and the latent cache is built (e.g. cuda; on a 2-core CPU slow)",
    )
    p.add_argument(
        "--first-stage-gamma",
        type=float,
        default=0.0,
        help="also take the first stage's loss on gamma-encoded intensities, e.g. 2.2 (0: off, the default; tried "
        "against the darkest skin tones' smeared mouths, it did not fix them)",
    )
    p.add_argument("--steps", type=int, default=12000, help="diffusion training steps per variant (train.max_steps)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's data.batch_size")
    p.add_argument("--lr", type=float, default=None, help="default: the config's model.base_learning_rate")
    p.add_argument(
        "--set",
        dest="config_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for the trainer runs, e.g. --set model.scale_lr=true (repeatable)",
    )
    p.add_argument("--variants", default="real,control", help="comma list of real, control")
    p.add_argument("--eval-frames", type=int, default=100, help="held-out frames per identity")
    p.add_argument(
        "--sample-steps",
        type=int,
        default=None,
        help=f"sampler steps (default {DEFAULT_SAMPLE_STEPS}; with --sampler recorded: the checkpoint's own steps and "
        "grid, unless given)",
    )
    p.add_argument(
        "--sampler",
        default="dpm++",
        choices=["dpm++", "ddim", "recorded"],
        help="held-out sampler; recorded: the one a distilled student's checkpoint records (with --evaluate)",
    )
    p.add_argument("--eval-every", type=int, default=4000, help="also evaluate (learning curve) every N steps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--gpus", default=None, help="trainer --gpus (e.g. '0,'); default: CPU")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue each variant's trainer run (OUT/<variant>/run, trainer --resume) up to --steps; its curve in "
        "OUT/report.json goes on",
    )
    p.add_argument("--export", default=None, help="write the real model as the demo model into this folder")
    p.add_argument(
        "--evaluate",
        metavar="MODEL",
        default=None,
        help="only evaluate a saved model (a folder with config.yaml, model.safetensors, first_stage.pt, or a "
        "checkpoint) on the held-out identities of --data; writes OUT/evaluation.json",
    )
    p.add_argument(
        "--compare-with",
        metavar="MODEL",
        default=None,
        help="after training, score the real model's mouths against MODEL's (a model folder such as "
        "talkingface/synthetic/assets, or a learnability run folder) upsampled to this config's side, on the same "
        "held-out frames: OUT/sharpness.json (benchmarks/sharpness_512.py)",
    )
    p.add_argument("--smoke", action="store_true", help="tiny data and a few steps (CI)")
    p.add_argument("--no-progress", action="store_true")
    return p


def prepare_data(args: argparse.Namespace, data: Path, progress: bool, side: int) -> Path:
    """The synthetic set at ``data`` (generated unless there; frames and crops per :func:`set_sizes` of the model's
    image side ``side`` unless --frame-size / --crop-size say otherwise). A set whose crops are smaller than ``side``
    is refused (its frames would reach the model upsampled)."""
    root = data / DATASET_DIR
    frame_size, crop_size = generation_sizes(args, side)
    if crop_size < side:
        raise SystemExit(f"error: --crop-size: {crop_size} is smaller than the config's image side {side}")
    if not DatasetLayout(root).meta_path.is_file():
        synthetic_main(
            [
                "--out",
                str(data),
                "--overwrite",  # a set left half-written by an interrupted run (never other files)
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
                "--size",
                str(crop_size),
                "--frame-size",
                str(frame_size),
                "--audio-features",
                args.audio_features,
                *(["--whisper-model", args.whisper_model] if args.whisper_model else []),
                *(["--wav2vec2-model", args.wav2vec2_model] if args.wav2vec2_model else []),
                *(["--no-progress"] if not progress else []),
            ]
        )
        if not DatasetLayout(root).meta_path.is_file():
            raise SystemExit(f"error: generating the synthetic set into {data} failed")
    saved = int(DatasetLayout(root).read_meta().get("image_size") or 0)
    if saved < side:
        raise SystemExit(
            f"error: --data: {data} holds crops of {saved} px, smaller than the config's image side {side}; "
            "generate a set for this config (leave --data out)"
        )
    if saved < crop_size:
        log.warning(
            "%s holds crops of %d px, less than the %d px a set for this %d px config gets: its faces may reach the "
            "model less sharp than they are drawn",
            data,
            saved,
            crop_size,
            side,
        )
    return root


def feature_overrides(cfg: Any, root: Path) -> list[str]:
    """Config overrides that make the model eat the dataset's audio features (kind and dimension)."""
    feat = DatasetLayout(root).read_meta()["audio_feature"]
    c = cfg.model.conditioning
    overrides = []
    if feat["kind"] != c.audio_feature_kind:
        overrides.append(f"model.conditioning.audio_feature_kind={feat['kind']}")
    if int(feat.get("dim", c.audio_feature_dim)) != c.audio_feature_dim:
        overrides.append(f"model.conditioning.audio_feature_dim={int(feat['dim'])}")
    return overrides


def prepare_first_stage(args: argparse.Namespace, cfg: Any, data: Path, root: Path, out: Path, report: dict) -> Path:
    """Train (or reuse) the synthetic first stage; record its latent std (``scale_factor = 1 / std``)."""
    size = cfg.model.first_stage.resolution
    progress = not args.no_progress
    images, masked = load_first_stage_images(root, data / "data_train.txt", size, progress)
    fs_path = Path(args.first_stage) if args.first_stage else out / "first_stage.pt"
    if args.first_stage and fs_path.is_file():
        vq = build_first_stage(cfg.model.first_stage)
        holder = torch.nn.Module()
        holder.first_stage_model = vq
        load_first_stage(holder, fs_path)
        report["first_stage"] = {"path": str(fs_path), "reused": True}
    else:
        fs = train_first_stage(
            torch.cat([images, masked]),
            cfg.model.first_stage,
            steps=args.first_stage_steps,
            batch_size=args.first_stage_batch,
            seed=args.seed,
            progress=progress,
            device=args.first_stage_device,
            gamma=args.first_stage_gamma or None,
            recon_images=32 if args.smoke else 512,
        )
        vq = fs.model
        save_first_stage(vq, fs_path)
        report["first_stage"] = {
            "path": str(fs_path),
            "recon_l1": fs.recon_l1,
            "seconds": round(fs.seconds, 1),
            "steps": args.first_stage_steps,
            "batch_size": args.first_stage_batch,
            "gamma": args.first_stage_gamma,
            "device": str(args.first_stage_device),
        }
    device = torch.device(args.first_stage_device)  # the encodes of every training frame: a GPU's work at 128 px
    vq = vq.to(device)
    with torch.no_grad():
        std = float(
            torch.cat([vq.encode(images[i : i + 256].to(device)).cpu() for i in range(0, len(images), 256)]).std()
        )
    vq.cpu()
    report["first_stage"]["latent_std"] = std
    report["train_frames"] = len(images)
    return fs_path


def run(args: argparse.Namespace) -> dict:
    resolve_sample_steps(args)
    if args.smoke:
        args.identities, args.seconds, args.test_identities = 2, 2.6, 1
        args.first_stage_steps, args.first_stage_batch, args.eval_frames, args.sample_steps = 2, 4, 4, 2
        args.steps = 3 if args.steps == build_parser().get_default("steps") else args.steps
        # a narrow first stage (width 32, the least GroupNorm allows): the same code path, a quarter of the work
        args.config_overrides = ["model.first_stage.ch=32", *args.config_overrides]
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else out / "data"
    try:  # --set reaches the first stage and the sizes too
        cfg = load_training_config(args.config, args.config_overrides)
    except ConfigError as e:
        raise SystemExit(f"error: --config/--set: {e}") from None
    side = cfg.model.first_stage.resolution
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for variant in variants:
        if variant not in VARIANTS:
            raise SystemExit(f"error: unknown variant {variant!r} ({', '.join(VARIANTS)})")
    if args.compare_with:  # before hours of training
        from sharpness_512 import model_source

        model_source(Path(args.compare_with), "--compare-with")
        if "real" not in variants and not (out / "real" / "model").is_dir():
            raise SystemExit("error: --compare-with: needs the real variant (--variants real or an earlier run's)")
    root = prepare_data(args, data, progress, side)
    meta = DatasetLayout(root).read_meta()
    report: dict = {"config": args.config, "data": str(data), "threads": torch.get_num_threads(), "variants": {}}
    report["audio_feature"] = meta["audio_feature"]
    report["image_size"], report["latent_size"] = side, cfg.model.unet.image_size
    report["first_stage_factor"] = side // cfg.model.unet.image_size
    report["crop_size"] = int(meta["image_size"])
    report["train_device"] = f"gpus {args.gpus}" if args.gpus else "cpu"
    if args.resume and (out / "report.json").is_file():  # the variants' curves go on
        report["variants"] = json.loads((out / "report.json").read_text()).get("variants", {})
    # the ceiling of the pixel measure on ground-truth frames, per skin-tone group (clips 1-10: every tone bin)
    report["measure_ceiling_by_tone"] = measure_ceiling_by_tone(
        args.seed, min(args.seconds, 3.0), *generation_sizes(args, side)
    )
    fs_path = prepare_first_stage(args, cfg, data, root, out, report).resolve()
    scale = 1.0 / max(report["first_stage"]["latent_std"], 1e-6)
    overrides = [
        f"data.root={root}",
        f"data.train_list={data / 'data_train.txt'}",
        f"data.val_list={data / 'data_test.txt'}",
        f"data.latent_cache={cache_dir(data, args.config)}",
        f"model.first_stage.ckpt_path={fs_path}",
        f"model.diffusion.scale_factor={scale!r}",
        f"train.max_steps={args.steps}",
        *feature_overrides(cfg, root),
    ]
    overrides += [f"data.batch_size={args.batch_size}"] if args.batch_size else []
    overrides += [f"model.base_learning_rate={args.lr}"] if args.lr else []
    overrides += args.config_overrides
    if args.smoke:
        overrides += ["train.num_sanity_val_steps=0", "train.val_metrics_batches=0", "train.limit_val_batches=1"]
    # the trainer's latent cache, built by the product's command from this very first stage
    cache = cache_dir(data, args.config)
    if not (cache / "meta.json").is_file():
        status = latent_cache_main(
            [
                "build",
                str(root),
                "--out",
                str(cache),
                "--config",
                args.config,
                "--first-stage-ckpt",
                str(fs_path),
                "--device",
                str(args.first_stage_device),
                "--num-workers",
                "0",
                *overrides,
            ]
        )
        if status != 0:
            raise SystemExit(f"error: building the latent cache failed (exit {status})")
    if not variants:
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        return report

    report["first_stage"]["scale_factor"] = scale
    for variant in variants:
        report["variants"][variant] = train_variant(args, variant, overrides, out, data, fs_path, report)
    if args.compare_with:
        from sharpness_512 import compare_runs

        compare_runs(out, Path(args.compare_with), args, out / "sharpness.json")
    return report


def train_variant(
    args: argparse.Namespace, variant: str, overrides: list[str], out: Path, data: Path, fs_path: Path, report: dict
) -> dict:
    """One trainer run (``--run-dir OUT/<variant>/run``) with the held-out learning curve as a callback."""
    entry: dict = {"train_steps": args.steps, "shuffle_audio": VARIANTS[variant] == "true", "curve": []}
    run_dir = out / variant / "run"
    if args.resume:
        if not (run_dir / "checkpoints" / "last.ckpt").is_file():
            raise SystemExit(f"error: --resume: {run_dir / 'checkpoints' / 'last.ckpt'} not found")
        entry = {**report["variants"].get(variant, entry), "train_steps": args.steps}
    report["variants"][variant] = entry

    def on_point(step: int, res: EvalResult, point: dict, module: Any) -> None:
        entry["curve"].append(point)
        entry.update(summary(res, point))
        entry["batch_size"] = int(module.trainer.datamodule.batch_size)
        entry["lr"] = float(module.learning_rate)
        export_demo_model(module, fs_path, out / variant / "model", metrics=entry)
        if variant == "real" and args.export and step >= args.steps:
            export_demo_model(module, fs_path, Path(args.export), metrics=entry)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")

    curve = HeldoutCurve(
        data / DATASET_DIR,
        data / "data_test.txt",
        args.eval_every,
        on_point,
        eval_frames=args.eval_frames,
        sample_steps=args.sample_steps,
        seed=args.seed,
        train_seconds=float(entry["curve"][-1]["train_seconds"]) if entry["curve"] else 0.0,  # resumed: goes on
    )
    argv = ["--base", args.config, "-t", "--seed", str(args.seed)]
    if args.resume:
        argv += ["--resume", str(run_dir)]
    else:
        argv += ["--run-dir", str(run_dir), *(["--overwrite-run"] if run_dir.exists() else [])]
    argv += ["--gpus", args.gpus] if args.gpus else []
    status = trainer_main([*argv, *overrides, f"data.shuffle_audio={VARIANTS[variant]}"], extra_callbacks=[curve])
    if status != 0:
        raise SystemExit(f"error: the trainer exited with status {status} ({variant})")
    entry["run_dir"] = str(run_dir)
    log.info("%s: trained %d steps in %.0f s", variant, args.steps, curve.points[-1]["train_seconds"])
    return entry


def summary(res: EvalResult, point: dict) -> dict:
    """The latest curve point's figures, flattened for report.json and metrics.json."""
    residuals = [v["silence_residual"] for v in point["videos"] if v["pause_frames"] > 0]
    return {
        "steps_done": point["step"],
        "correlation": res.correlation,
        "correlation_per_video": res.correlation_per_video,
        "correlation_measure_on_ground_truth": res.correlation_gt_pixels,
        "correlation_measure_through_first_stage": res.correlation_first_stage,
        "mouth_psnr": res.mouth_psnr,
        "mouth_ssim": res.mouth_ssim,
        "eval_frames": res.frames,
        "train_seconds": point["train_seconds"],
        "eval_seconds": point["eval_seconds"],
        "final_loss": point["loss"],
        "silence_residual_max": max(residuals) if residuals else None,
        "silence_tolerance": SILENCE_TOLERANCE,
        "videos": point["videos"],
        "opening_true": res.opening_true,
        "opening_generated": res.opening_generated,
    }


def evaluate_only(args: argparse.Namespace) -> dict:
    """``--evaluate MODEL``: the held-out figures of a saved model, as one curve point of a training run."""
    from dataclasses import asdict

    resolve_sample_steps(args)
    from talkingface.demo_assets import demo_model_paths
    from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference
    from talkingface.synthetic.learn import evaluate_heldout

    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data or Path(args.out) / "data")
    model_path = Path(args.evaluate)
    if model_path.is_dir():
        model = get_difftalk_inference(*demo_model_paths(model_path), device="cpu")
    else:
        model = get_difftalk_inference(ckpt=str(model_path), device="cpu")
    res = evaluate_heldout(
        model,
        data / DATASET_DIR,
        data / "data_test.txt",
        args.eval_frames,
        args.sample_steps or None,
        seed=args.seed,
        progress=not args.no_progress,
        sampler=None if args.sampler == "recorded" else args.sampler,
    )
    point = {"step": None, "loss": None, "train_seconds": None, "eval_seconds": None}
    point["videos"] = [{**asdict(v), "silence_residual": v.silence_residual} for v in res.videos]
    sampling = getattr(model, "sampling", None)
    entry = {
        "model": str(model_path),
        "sampler": args.sampler if args.sampler != "recorded" else sampling and sampling.sampler,
        "sample_steps": args.sample_steps or (sampling and sampling.steps),
        **summary(res, point),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(entry, indent=2) + "\n")
    return {"variants": {"evaluated": entry}}


def resolve_sample_steps(args: argparse.Namespace) -> argparse.Namespace:
    """``--sample-steps`` left out: the recorded sampler's own steps (0) with ``--sampler recorded`` (a student's DDIM
    grid; 20 here silently sampled a 4-step student with 20 uniform DDIM steps), else DEFAULT_SAMPLE_STEPS."""
    if args.sample_steps is None:
        args.sample_steps = 0 if args.sampler == "recorded" else DEFAULT_SAMPLE_STEPS
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = resolve_sample_steps(build_parser().parse_args(argv))
    report = evaluate_only(args) if args.evaluate else run(args)
    for name, v in report["variants"].items():
        print(
            f"{name:8s} r={v['correlation']:+.3f}  mouth PSNR={v['mouth_psnr']:.2f} dB  SSIM={v['mouth_ssim']:.3f}"
            + (f"  train {v['train_seconds']:.0f} s ({v['train_steps']} steps)" if "train_steps" in v else "")
        )
        for e in v["videos"]:
            print(
                f"    identity {e['video']:3d}: tone {e['skin_tone']}, skin {e['skin_luminance']:.2f}  "
                f"r={e['correlation']:+.3f} "
                f"(measure on ground truth {e['correlation_gt_pixels']:+.3f}, through the first stage "
                f"{e['correlation_first_stage']:+.3f})  mouth PSNR {e['mouth_psnr']:.2f} dB  "
                f"SSIM {e['mouth_ssim']:.3f}  first stage L1 {e['first_stage_l1']:.3f}  "
                f"pause residual {e['silence_residual']:+.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
