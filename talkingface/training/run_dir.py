"""Run folders: ``<logdir>/<timestamp>_<name>/`` with ``configs/``, ``checkpoints/``, ``images/``, ``tensorboard/``.

Resuming accepts a run folder (its ``checkpoints/last.ckpt`` is used) or a checkpoint file inside one. A run holds
``<run folder>/.lock`` (:func:`run_lock`) from start to end, so that two runs never write into one folder.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from talkingface.errors import TalkingFaceError
from talkingface.model.image_driven_talkingface.DiffTalk.config import save_config
from talkingface.paths import atomic_output
from talkingface.training.config import TrainingConfig

#: Set by the launching process so that DDP processes started by Lightning use the same run folder.
RUN_DIR_ENV = "TALKINGFACE_RUN_DIR"
CONFIG_SNAPSHOT = "config.yaml"
COMMAND_RECORD = "command.txt"
LOCK_FILE = ".lock"


class RunDirError(TalkingFaceError, ValueError):
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
    def command_record(self) -> Path:
        return self.config_dir / COMMAND_RECORD

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_FILE

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

    @property
    def run_folders(self) -> tuple[Path, ...]:
        """The folders a run writes into its run folder (and ``--overwrite-run`` deletes)."""
        return self.config_dir, self.ckpt_dir, self.root / "images", self.root / "tensorboard"

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


def is_run(paths: RunPaths) -> bool:
    """True when ``paths.root`` is a training run: the trainer wrote its config snapshot and its command record
    (``configs/config.yaml`` and ``configs/command.txt``, both written when a run starts)."""
    return paths.config_snapshot.is_file() and paths.command_record.is_file()


def check_run_dir(paths: RunPaths, overwrite: bool = False) -> None:
    """Refuse a new run in a folder that holds a run (unless ``overwrite``) or looks like one without being one.

    Raises:
        RunDirError: the folder holds a run and ``overwrite`` is false, or it holds a ``checkpoints/`` or
            ``configs/config.yaml`` that no run wrote.
    """
    if not holds_a_run(paths):
        return
    if not is_run(paths):
        raise RunDirError(
            f"--run-dir {paths.root}: is not a training run (it has a non-empty checkpoints/ or a configs/config.yaml "
            f"but no {paths.command_record.relative_to(paths.root)}); nothing deleted, give another --run-dir"
        )
    if not overwrite:
        raise RunDirError(
            f"--run-dir {paths.root}: already holds a run (configs/, checkpoints/); continue it with "
            f"--resume {paths.root}, or pass --overwrite-run to start a new run there (the old run's files are deleted)"
        )


def claim_run_dir(paths: RunPaths, overwrite: bool = False) -> None:
    """Make sure a new run does not silently overwrite another run's files (:func:`check_run_dir`).

    With ``overwrite``, a run in ``paths.root`` has its ``configs/``, ``checkpoints/``, ``images/`` and
    ``tensorboard/`` removed first, so that nothing of the old run is mistaken for the new run's; nothing else in the
    folder is touched, and a folder that is not a run is never deleted from. Call it while holding :func:`run_lock`.
    """
    check_run_dir(paths, overwrite)
    if holds_a_run(paths):
        for folder in paths.run_folders:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold ``<root>/.lock`` for one run (``fcntl.flock``: released when the process ends, however it ends).

    ``root`` must exist. The lock file stays in place afterwards (deleting it would let a run that opened it just
    before lock a file no other run sees).

    Raises:
        RunDirError: naming the lock file, at once, when another run holds it.
    """
    path = RunPaths(root).lock_file
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(
                f"{path}: another run holds this lock (it is training in this folder); wait for it to end, "
                "or give another --run-dir"
            ) from None
        yield
    finally:
        os.close(fd)


def missing_top(path: Path) -> Path | None:
    """The outermost folder of ``path`` (``path`` itself included) that does not exist: what ``mkdir(parents=True)``
    creates; None when ``path`` exists."""
    top = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        top = folder
    return top


def remove_created(created: list[Path]) -> None:
    """Remove what a start that failed before its first step created (:func:`missing_top`, the run's folders that
    were absent), so that the same ``--run-dir`` can be used again; nothing that existed before is touched."""
    for path in created:
        shutil.rmtree(path, ignore_errors=True)


def write_snapshot(paths: RunPaths, config: TrainingConfig, argv: list[str]) -> None:
    """Write ``configs/config.yaml`` (the effective config) and append the command line to ``configs/command.txt``."""
    paths.create()
    with atomic_output(paths.config_snapshot) as tmp:
        save_config(config, tmp)
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    with open(paths.command_record, "a", encoding="utf-8") as f:
        f.write(f"{stamp} {shlex.join(argv)}\n")
