"""``talkingface export CKPT OUT`` (also ``python -m talkingface.training.export``): slim safetensors export of a
trainer checkpoint (see :mod:`talkingface.training.export`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from talkingface.cli_support import EXIT_OK, ArgumentParser, command, fail
from talkingface.training.export import __doc__ as EXPORT_DOC
from talkingface.training.export import export_checkpoint


@command
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m talkingface.training.export",
        description=EXPORT_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ckpt", help="trainer checkpoint (.ckpt)")
    parser.add_argument("out", help="output .safetensors path (its config goes beside it as .yaml)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export (never the input)")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="load a checkpoint that needs full unpickling (it can run code: only for files you trust)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not Path(args.ckpt).is_file():
        return fail(args.ckpt, "checkpoint not found")
    export_checkpoint(args.ckpt, args.out, trust_checkpoint=args.trust_checkpoint, overwrite=args.overwrite)
    return EXIT_OK
