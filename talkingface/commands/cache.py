"""``talkingface cache build ROOT`` (also ``python -m talkingface.training.latent_cache build``): the command of
:mod:`talkingface.training.latent_cache`, imported after parsing."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from talkingface.cli_support import (
    ArgumentParser,
    add_device_option,
    add_option,
    check_device,
    command,
    number,
    split_overrides,
)
from talkingface.data.latent_cache import DTYPES, LatentCacheError

DESCRIPTION = """\
Precompute the first-stage latents of every frame of a dataset and of its masked version, once, so that training
decodes no JPEG and runs no VQ encoder:

  talkingface cache build data/HDTF --config configs/latent-diffusion/talking.yaml --device cuda

then train with data.latent_cache=data/HDTF/latents. --out may be a new folder, or with --overwrite a cache this
command built; it may not hold the dataset nor lie inside its folders (a folder of its own in the dataset root, like
the default <root>/latents, is fine)."""


def _build_command(args: argparse.Namespace) -> int:
    import torch

    from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import (
        first_stage_state_dict,
        load_checkpoint_file,
        load_state_dict_strict,
    )
    from talkingface.model.image_driven_talkingface.DiffTalk.config import default_config_path
    from talkingface.model.image_driven_talkingface.DiffTalk.model import build_first_stage
    from talkingface.training.config import load_training_config
    from talkingface.training.latent_cache import build_latent_cache, check_cache_out

    check_device(args.device)
    out = args.out or Path(args.root) / "latents"
    check_cache_out(args.root, out, args.overwrite)  # before loading anything
    cfg = load_training_config(args.config or default_config_path("talking.yaml"), args.overrides)
    ckpt = args.first_stage_ckpt or cfg.model.first_stage.ckpt_path
    first_stage = build_first_stage(cfg.model.first_stage)
    if ckpt:
        sd = first_stage_state_dict(load_checkpoint_file(ckpt, args.trust_checkpoint))
        load_state_dict_strict(first_stage, sd, source=f"first-stage checkpoint {ckpt}")
    elif not args.allow_random_first_stage:
        raise LatentCacheError(
            "--first-stage-ckpt",
            "no first-stage checkpoint",
            hint="pass --first-stage-ckpt models/model.ckpt (or set model.first_stage.ckpt_path)",
        )
    torch.set_grad_enabled(False)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    build_latent_cache(
        args.root,
        out,
        cfg.model,
        first_stage,
        device=device,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        dtype=args.dtype,
        overwrite=args.overwrite,
    )
    return 0


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m talkingface.training.latent_cache",
        description=DESCRIPTION,
        epilog="KEY=VALUE arguments override the config, e.g. model.first_stage.ch=32",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "build",
        help="encode every frame and its masked version with the frozen first stage",
        description=DESCRIPTION,
        epilog=parser.epilog,
    )
    b.add_argument("root", help="dataset root (images/, landmarks/, data.txt)")
    b.add_argument("--out", help="cache folder (default: <root>/latents)")
    b.add_argument(
        "--config",
        default=None,
        metavar="CONFIG.yaml",
        help="DiffTalk config YAML (default: the packaged talking.yaml)",
    )
    add_option(
        b,
        "--first-stage-ckpt",
        hidden=["--first-stage"],
        default=None,
        help="VQ first stage checkpoint (default: model.first_stage.ckpt_path of the config)",
    )
    add_device_option(b)
    b.add_argument("--batch-size", type=number(int, min=1, max=4096), default=32, help="frames encoded together")
    b.add_argument(
        "--num-workers", type=number(int, min=0, max=256), default=4, help="data loader worker processes (0: none)"
    )
    b.add_argument("--dtype", choices=DTYPES, default="float32", help="float16 halves the size (lossy)")
    b.add_argument(
        "--overwrite", action="store_true", help="rebuild an existing cache (only a folder this command built)"
    )
    b.add_argument("--trust-checkpoint", action="store_true", help="allow full unpickling of the VQ checkpoint")
    b.add_argument("--allow-random-first-stage", action="store_true", help=argparse.SUPPRESS)
    return parser


@command
def main(argv: list[str] | None = None) -> int:
    overrides, rest = split_overrides(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(rest)
    args.overrides = overrides
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return _build_command(args)
