"""``talkingface train`` (also ``trainer/DiffTalkTrainer.py``): the DiffTalk trainer's command line; the work is
``talkingface.training.run.run_training``, imported after parsing."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from talkingface.cli_support import ArgumentParser, add_option, command, number, one_line, seed, split_overrides

log = logging.getLogger("talkingface.training")

DESCRIPTION = """\
Train DiffTalk.

  talkingface train --base configs/latent-diffusion/talking.yaml -t --gpus 0,1,2,3,4,5,6,7,

--base YAML files are merged left to right onto the config schema, then KEY=VALUE arguments (before or after --base)
override them. Trainer options can also come from a YAML file (--options opts.yaml; keys are the long flag names,
command-line values win). Without -t the command only checks the config and the dataset, and trains nothing."""


def _str2bool(v: str | bool) -> bool:
    if isinstance(v, bool):
        return v
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected, got {v!r}")


def _add_bool_option(
    p: ArgumentParser,
    *flags: str,
    default: bool | None,
    help: str,  # noqa: A002 - argparse's name
    hidden: Sequence[str] = (),
) -> None:
    """A switch that also takes a value: the flag alone means true, ``FLAG true`` / ``FLAG false`` (yes/no, 1/0)
    say which; ``hidden``: older spellings (:func:`~talkingface.cli_support.add_option`)."""
    add_option(
        p, *flags, hidden=hidden, type=_str2bool, nargs="?", const=True, default=default, metavar="BOOL", help=help
    )


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="DiffTalkTrainer.py",
        description=DESCRIPTION,
        epilog="Any KEY=VALUE argument overrides the config, e.g. data.batch_size=4 train.max_steps=1000.",
    )
    add_option(
        p,
        "--options",
        hidden=["-c", "--config"],
        metavar="OPTIONS.yaml",
        help="YAML file of trainer options (keys are the long flag names, e.g. 'gpus: 0,1,'); flags win",
    )
    p.add_argument(
        "-b",
        "--base",
        nargs="*",
        default=[],
        metavar="CONFIG.yaml",
        help="DiffTalk config YAMLs (model, data, train), merged left to right (default: the config schema's values)",
    )
    _add_bool_option(
        p,
        "-t",
        "--train",
        default=False,
        help="train (-t, or -t true); without it (default) only check the config and the dataset and exit",
    )
    p.add_argument("--gpus", default=None, help="GPU indices, e.g. '0,' or '0,1,2,3,' (default: none, train on CPU)")
    p.add_argument(
        "--devices",
        type=number(int, min=1, max=1024),
        default=1,
        help="number of CPU processes when --gpus is absent",
    )
    add_option(
        p,
        "--num-nodes",
        hidden=["--num_nodes"],
        type=number(int, min=1, max=4096),
        default=int(os.environ.get("NUM_NODES", "1")),
        help="nodes (multi-node; default: $NUM_NODES, else 1)",
    )
    p.add_argument(
        "--strategy", choices=("ddp", "ddp_spawn", "auto"), default=None, help="default: ddp with more than one process"
    )
    p.add_argument("-n", "--name", default="", help="run name (default: the first config's file name)")
    p.add_argument("-f", "--postfix", default="", help="suffix of the run folder name")
    p.add_argument("-l", "--logdir", default="logs", help="folder that holds the run folders")
    add_option(
        p,
        "--run-dir",
        hidden=["--run_dir"],
        default=None,
        help="use exactly this run folder (multi-node: the same on all nodes; default: a new folder in --logdir)",
    )
    add_option(
        p,
        "--overwrite-run",
        hidden=["--overwrite_run"],
        action="store_true",
        help="start a new run in a --run-dir that holds a run (its configs/, checkpoints/, images/ and tensorboard/ "
        "are deleted; a folder that is not a run is refused)",
    )
    p.add_argument("-r", "--resume", default=None, help="continue a run: its folder or a checkpoint in it")
    p.add_argument("-s", "--seed", type=seed(), default=None, help="seed (default: train.seed of the config)")
    _add_bool_option(
        p,
        "--scale-lr",
        hidden=["--scale_lr"],
        default=None,
        help="learning rate x processes x batch x accumulate (default: model.scale_lr of the config)",
    )
    return p


def _apply_options_file(parser: ArgumentParser, path: str) -> None:
    """Defaults from an options YAML: ``{long flag name: value}``; the command line still wins."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from talkingface.model.image_driven_talkingface.DiffTalk.config import yaml_problem

    if not Path(path).is_file():
        parser.error(f"argument --options: {path}: file not found")
    try:
        values = OmegaConf.to_container(OmegaConf.load(path))
    except OmegaConfBaseException as err:
        parser.error(f"argument --options: {path}: {err}")
    except yaml.YAMLError as err:  # e.g. a !!python tag: refused by the safe loader, never executed
        parser.error(f"argument --options: {path}: invalid YAML: {yaml_problem(err)}")
    except UnicodeDecodeError as err:
        parser.error(f"argument --options: {path}: not UTF-8 text (byte offset {err.start})")
    except OSError as err:
        if err.errno is not None:  # unreadable: the command's handler names the file
            raise
        values = None  # OmegaConf's word for a number or a boolean at the top
    if not isinstance(values, dict):
        parser.error(f"argument --options: {path}: expected a mapping of flag names to values")
    known = {a.dest for a in parser._actions}
    defaults = {}
    for key, value in values.items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest not in known or dest in ("help", "options"):
            parser.error(f"argument --options: {path}: unknown option {key!r}")
        defaults[dest] = ",".join(map(str, value)) + "," if dest == "gpus" and isinstance(value, list) else value
    parser.set_defaults(**defaults)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Options and the dotlist overrides (which may stand anywhere); anything else is an error."""
    parser = build_parser()
    overrides, rest = split_overrides(argv)
    pre, _ = build_parser().parse_known_args(rest)
    if pre.options:
        _apply_options_file(parser, pre.options)
    args, unknown = parser.parse_known_args(rest)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.name and args.resume:
        parser.error("argument -n/--name: cannot be combined with --resume (a resumed run keeps its folder)")
    if args.overwrite_run and args.resume:
        parser.error("argument --overwrite-run: cannot be combined with --resume (a resumed run keeps its files)")
    return args, overrides


def setup_logging() -> None:
    from pytorch_lightning.utilities import rank_zero_only

    rank = getattr(rank_zero_only, "rank", 0)
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )


@command
def main(argv: list[str] | None = None, extra_callbacks: list[Any] | None = None) -> int:
    """Run the trainer; returns the exit status (0 done, 1 a checkpoint could not be written, 2 bad input, 128 + signal
    when stopped by a signal)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = parse_args(argv)
    setup_logging()
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from talkingface.model.image_driven_talkingface.DiffTalk.config import ConfigError
    from talkingface.training.run import run_training

    try:
        return run_training(args, overrides, argv, extra_callbacks or [])
    except MisconfigurationException as err:  # Lightning's word for a setting it cannot use: bad input too
        raise ConfigError(None, one_line(err)) from None
