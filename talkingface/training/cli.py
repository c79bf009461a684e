"""The DiffTalk trainer command line (``trainer/DiffTalkTrainer.py``).

    python trainer/DiffTalkTrainer.py --base configs/latent-diffusion/talking.yaml -t --gpus 0,1,2,3,4,5,6,7,

``--base`` YAML files are merged left to right onto the typed schema, then ``key.sub=value`` arguments (OmegaConf
dotlist) override them. Trainer options themselves can also come from a YAML file (``-c/--config opts.yaml``,
configargparse style; command-line values win). Without ``-t`` the trainer only checks the config and the dataset.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import configargparse
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from talkingface.model.image_driven_talkingface.DiffTalk.config import ConfigError, DiffTalkConfig, load_config
from talkingface.training.data import DataCheckError
from talkingface.training.devices import DeviceSpecError
from talkingface.training.run_dir import RunDirError

log = logging.getLogger("talkingface.training")

#: Errors that are the user's to fix: printed as one clear message, exit status 2.
USER_ERRORS = (ConfigError, DataCheckError, DeviceSpecError, RunDirError, FileNotFoundError)


def _str2bool(v: str | bool) -> bool:
    if isinstance(v, bool):
        return v
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise configargparse.ArgumentTypeError(f"boolean value expected, got {v!r}")


def build_parser() -> configargparse.ArgumentParser:
    p = configargparse.ArgumentParser(
        prog="DiffTalkTrainer.py",
        description=__doc__.split("\n\n")[0],
        epilog="Any further KEY=VALUE argument overrides the config, e.g. data.batch_size=4 train.max_steps=1000.",
        config_file_parser_class=configargparse.YAMLConfigFileParser,
        args_for_setting_config_path=["-c", "--config"],
        config_arg_help_message="YAML file of trainer options (keys are the long option names, e.g. 'gpus: 0,1,')",
    )
    p.add_argument("-b", "--base", nargs="*", default=[], metavar="CONFIG.yaml", help="model/data/train configs")
    p.add_argument("-t", "--train", type=_str2bool, nargs="?", const=True, default=False, help="train")
    p.add_argument("--gpus", default=None, help="GPU indices, e.g. '0,' or '0,1,2,3,' (absent: CPU)")
    p.add_argument("--devices", type=int, default=1, help="number of CPU processes when --gpus is absent")
    p.add_argument("--num_nodes", type=int, default=int(os.environ.get("NUM_NODES", "1")), help="nodes (multi-node)")
    p.add_argument("--strategy", choices=("ddp", "ddp_spawn", "auto"), default=None, help="default: ddp if >1 process")
    p.add_argument("-n", "--name", default="", help="run name (default: the first config's file name)")
    p.add_argument("-f", "--postfix", default="", help="suffix of the run folder name")
    p.add_argument("-l", "--logdir", default="logs", help="folder that holds the run folders")
    p.add_argument("--run_dir", default=None, help="use exactly this run folder (multi-node: same on every node)")
    p.add_argument("-r", "--resume", default=None, help="continue a run: its folder or a checkpoint in it")
    p.add_argument("-s", "--seed", type=int, default=None, help="seed (default: train.seed of the config)")
    p.add_argument(
        "--scale_lr", type=_str2bool, nargs="?", const=True, default=None, help="lr x processes x batch x accumulate"
    )
    return p


_BOOLS = {"yes", "true", "t", "y", "1", "no", "false", "f", "n", "0"}
_OPTIONAL_BOOL_FLAGS = ("-t", "--train", "--scale_lr")


def _explicit_flags(argv: list[str]) -> list[str]:
    """``-t key=value`` would hand ``key=value`` to ``-t`` as its value: write such flags as ``-t=true``."""
    out = []
    for i, arg in enumerate(argv):
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg in _OPTIONAL_BOOL_FLAGS and (nxt is None or nxt.lower() not in _BOOLS):
            arg = f"{arg}=true"
        out.append(arg)
    return out


def parse_args(argv: list[str]) -> tuple[configargparse.Namespace, list[str]]:
    """Options and the dotlist overrides; anything else is an error."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(_explicit_flags(argv))
    bad = [u for u in unknown if "=" not in u or u.startswith("-")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (config overrides look like data.batch_size=4)")
    if args.name and args.resume:
        parser.error("-n/--name and -r/--resume cannot be combined: a resumed run keeps its folder")
    return args, unknown


def merge_configs(base: list[str | Path], overrides: list[str]) -> DiffTalkConfig:
    """Load ``base`` YAML files left to right (each must exist and parse), then the dotlist overrides."""
    merged: Any = OmegaConf.create()
    for path in base:
        if not Path(path).is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        except OmegaConfBaseException as err:
            raise ConfigError(f"invalid config file {path}: {err}") from None
    try:
        return load_config(OmegaConf.to_container(merged), overrides)
    except ConfigError as err:
        raise ConfigError(f"{err}\n  (configs: {[str(b) for b in base] or 'defaults'})") from None


def setup_logging() -> None:
    from pytorch_lightning.utilities import rank_zero_only

    rank = getattr(rank_zero_only, "rank", 0)
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )


def main(argv: list[str] | None = None, extra_callbacks: list[Any] | None = None) -> int:
    """Run the trainer; returns the exit status (0 done, 2 user error, 128 + signal when stopped by a signal)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    args, overrides = parse_args(argv)
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        from talkingface.training.run import run_training

        return run_training(args, overrides, argv, extra_callbacks or [])
    except (*USER_ERRORS, MisconfigurationException) as err:
        log.error("%s", err)
        return 2


def exit_status(stopped_by: int | None) -> int:
    return 0 if stopped_by is None else 128 + int(signal.Signals(stopped_by))
