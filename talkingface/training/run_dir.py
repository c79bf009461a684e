"""Run folders: ``<logdir>/<timestamp>_<name>/`` with ``configs/``, ``checkpoints/``, ``images/``, ``tensorboard/``.

Resuming accepts a run folder (its ``checkpoints/last.ckpt`` is used) or a checkpoint file inside one.
"""

from __future__ import annotations

import datetime
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from talkingface.model.image_driven_talkingface.DiffTalk.config import DiffTalkConfig, save_config

#: Set by the launching process so that DDP processes started by Lightning use the same run folder.
RUN_DIR_ENV = "TALKINGFACE_RUN_DIR"
CONFIG_SNAPSHOT = "config.yaml"


class RunDirError(ValueError):
    """A run folder or checkpoint to resume from is missing or malformed."""


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "configs"

    @property
    def config_snapshot(self) -> Path:
        return self.config_dir / CONFIG_SNAPSHOT

    @property
    def ckpt_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_ckpt(self) -> Path:
        return self.ckpt_dir / "last.ckpt"

    @property
    def image_dir(self) -> Path:
        return self.root / "images" / "train"

    @property
    def slim_export(self) -> Path:
        return self.ckpt_dir / "difftalk_ema.safetensors"

    def create(self) -> None:
        for d in (self.config_dir, self.ckpt_dir, self.image_dir):
            d.mkdir(parents=True, exist_ok=True)


def new_run_name(
    base_configs: list[str], name: str = "", postfix: str = "", now: datetime.datetime | None = None
) -> str:
    """``<YYYY-mm-ddTHH-MM-SS>_<name or first config's stem><postfix>``, as the reference names runs."""
    stamp = (now or datetime.datetime.now()).strftime("%Y-%m-%dT%H-%M-%S")
    label = name or (Path(base_configs[0]).stem if base_configs else "difftalk")
    return f"{stamp}_{label}{postfix}"


def resolve_resume(resume: str | os.PathLike) -> tuple[RunPaths, Path]:
    """A run folder or a checkpoint inside ``<run>/checkpoints/`` -> (run paths, checkpoint to resume from)."""
    path = Path(resume)
    if path.is_file():
        if path.parent.name != "checkpoints":
            raise RunDirError(f"--resume {path}: a checkpoint to resume must lie in <run folder>/checkpoints/")
        paths, ckpt = RunPaths(path.parent.parent), path
    elif path.is_dir():
        paths = RunPaths(path)
        ckpt = paths.last_ckpt
        if not ckpt.is_file():
            raise RunDirError(f"--resume {path}: no {ckpt.relative_to(path)} (the run never wrote a checkpoint)")
    else:
        raise RunDirError(f"--resume {path}: no such run folder or checkpoint")
    if not paths.config_snapshot.is_file():
        raise RunDirError(f"--resume {path}: {paths.config_snapshot} is missing (not a DiffTalk run folder?)")
    return paths, ckpt


def holds_a_run(paths: RunPaths) -> bool:
    """True when ``paths.root`` already holds a run's config snapshot or checkpoints."""
    return paths.config_snapshot.is_file() or (paths.ckpt_dir.is_dir() and any(paths.ckpt_dir.iterdir()))


def claim_run_dir(paths: RunPaths, overwrite: bool = False) -> None:
    """Make sure a new run does not silently overwrite another run's files.

    An existing run in ``paths.root`` is refused unless ``overwrite``; then its ``configs/``, ``checkpoints/``,
    ``images/`` and ``tensorboard/`` are removed first, so that nothing of the old run is mistaken for the new run's.

    Raises:
        RunDirError: the folder holds a run and ``overwrite`` is false.
    """
    if not holds_a_run(paths):
        return
    if not overwrite:
        raise RunDirError(
            f"--run-dir {paths.root}: already holds a run (configs/, checkpoints/); continue it with "
            f"--resume {paths.root}, or pass --overwrite-run to start a new run there (the old run's files are deleted)"
        )
    for folder in (paths.config_dir, paths.ckpt_dir, paths.root / "images", paths.root / "tensorboard"):
        shutil.rmtree(folder, ignore_errors=True)


def write_snapshot(paths: RunPaths, config: DiffTalkConfig, argv: list[str]) -> None:
    """Write ``configs/config.yaml`` (the effective config) and append the command line to ``configs/command.txt``."""
    paths.create()
    tmp = paths.config_snapshot.with_name(f".{CONFIG_SNAPSHOT}.tmp")
    save_config(config, tmp)
    os.replace(tmp, paths.config_snapshot)
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    with open(paths.config_dir / "command.txt", "a", encoding="utf-8") as f:
        f.write(f"{stamp} {shlex.join(argv)}\n")
