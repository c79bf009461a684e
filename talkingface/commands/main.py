"""The ``talkingface`` command: one entry point, one subcommand per task (installed by ``pip install``).

    talkingface preprocess run videos/ --out data/HDTF
    talkingface train --base configs/latent-diffusion/talking.yaml -t --gpus 0,1,
    talkingface lipsync --video person.mp4 --audio speech.wav --out result.mp4

Each subcommand is the ``main`` of its module in this package, imported only when it runs (so ``--help`` starts in
well under a second), and also reachable as ``python -m talkingface COMMAND`` (where the console script is not on the
PATH) and as before (``python -m talkingface.preprocess``, ``trainer/DiffTalkTrainer.py``, ``demo.py``, ...). The
shared conventions (flags, ``error:`` lines, exit statuses) are in :mod:`talkingface.cli_support`.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from talkingface import __version__
from talkingface.cli_support import EXIT_OK, PROG, ArgumentParser, HelpFormatter, fail


@dataclass(frozen=True)
class Command:
    module: str  # imported when the subcommand runs; its ``main(argv) -> int`` does the work
    help: str


COMMANDS: dict[str, Command] = {
    "preprocess": Command("talkingface.commands.preprocess", "videos -> training layout: run | validate | finalize"),
    "train": Command("talkingface.commands.train", "train DiffTalk (same flags as trainer/DiffTalkTrainer.py)"),
    "lipsync": Command("talkingface.commands.lipsync", "lip-sync a portrait video to speech (same flags as demo.py)"),
    "evaluate": Command(
        "talkingface.commands.evaluate", "PSNR/SSIM/LMD/LPIPS/FID/LSE of a result against ground truth"
    ),
    "synthetic": Command("talkingface.commands.synthetic", "generate synthetic talking-face videos and datasets"),
    "cache": Command("talkingface.commands.cache", "precompute first-stage latents of a dataset (build)"),
    "export": Command("talkingface.commands.export", "slim safetensors export of a trainer checkpoint"),
    "app": Command("talkingface.commands.app", "web app: upload a video and speech, get the lip-synced mp4"),
}


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="talkingface",
        description="DiffTalk talking faces: one command, one subcommand per task.",
        epilog="Run talkingface COMMAND --help for the options of a command.",
        formatter_class=functools.partial(HelpFormatter, max_help_position=24),
    )
    p.add_argument("--version", action="version", version=f"talkingface {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.help, add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return EXIT_OK if argv else fail("COMMAND", f"missing; one of {', '.join(COMMANDS)}")
    if argv[0] == "--version":
        print(f"talkingface {__version__}")
        return EXIT_OK
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        return fail(name, f"unknown command; one of {', '.join(COMMANDS)} (talkingface --help lists them)")
    token = PROG.set(f"talkingface {name}")
    try:
        return int(importlib.import_module(COMMANDS[name].module).main(rest) or 0)
    finally:
        PROG.reset(token)
