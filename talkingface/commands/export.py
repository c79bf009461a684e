"""``talkingface export CKPT OUT`` (also ``python -m talkingface.training.export``): the command of
:mod:`talkingface.training.export`, imported after parsing."""

from __future__ import annotations

import logging
from pathlib import Path

from talkingface.cli_support import EXIT_OK, ArgumentParser, command
from talkingface.paths import require_writable

DESCRIPTION = """\
Slim export of a trainer checkpoint for inference: the EMA UNet, the condition encoders and the config, as
safetensors.

  talkingface export logs/<run>/checkpoints/last.ckpt exported/difftalk.safetensors

Writes difftalk.safetensors (the whole run config, the audio feature kind included, as JSON in its metadata) and
difftalk.yaml (the same config, for reading) beside it. The export needs no config to load; its VQ first stage comes
from the config's model.first_stage.ckpt_path (beside the export when a relative path names a file there, else as
given: models/model.ckpt), or from lipsync's --first-stage-ckpt.

An existing output (the .safetensors or its .yaml) is replaced only with --overwrite, and never when it is the input
checkpoint itself. Both files are written to a temporary file beside them and renamed into place."""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m talkingface.training.export", description=DESCRIPTION)
    parser.add_argument("ckpt", help="trainer checkpoint (.ckpt)")
    parser.add_argument("out", help="output .safetensors path (its config goes beside it as .yaml)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export (never the input)")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="load a checkpoint that needs full unpickling (it can run code: only for files you trust)",
    )
    return parser


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import CheckpointError
    from talkingface.training.export import export_checkpoint

    if not Path(args.ckpt).is_file():
        raise CheckpointError(args.ckpt, "checkpoint not found", hint="give the path of a trainer .ckpt")
    require_writable(Path(args.out).parent, hint="give another output path or fix the folder's permissions")
    export_checkpoint(args.ckpt, args.out, trust_checkpoint=args.trust_checkpoint, overwrite=args.overwrite)
    return EXIT_OK
