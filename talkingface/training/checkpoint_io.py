"""Atomic checkpoint writes (a crash or a kill while saving never leaves a truncated ``last.ckpt``) and checkpoint
reads that fail with one message naming the file."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from talkingface.errors import TalkingFaceError
from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import torch_file_problem, unsupported_global
from talkingface.paths import atomic_output
from talkingface.training.run_dir import RunDirError

_STEP_CKPT = re.compile(r"^step-(\d+)\.ckpt$")


def is_intact(path: Path) -> bool:
    """A torch checkpoint is a zip archive: a truncated one has lost its central directory (read at the end)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def newest_intact_step_checkpoint(folder: Path, other_than: Path | None = None) -> Path | None:
    """The ``step-N.ckpt`` in ``folder`` with the largest N that reads as an intact archive."""
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.ckpt") if (m := _STEP_CKPT.match(p.name))]
    for _, path in sorted(found, reverse=True):
        if path != other_than and is_intact(path):
            return path
    return None


class CheckpointWriteError(TalkingFaceError, OSError):
    """A checkpoint could not be written (e.g. the disk is full): one line naming it; the file it would have
    replaced is untouched."""

    exit_status = 1  # the run failed; what it wrote before is intact (see talkingface.cli_support.EXIT_PROBLEMS)

    def __init__(self, errno: int | None, problem: str) -> None:
        OSError.__init__(self, errno, problem)
        self.where, self.problem, self.hint = None, problem, None

    def __str__(self) -> str:
        return str(self.strerror)  # the message, without OSError's "[Errno N]" prefix


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a hidden temporary file next to the target, fsyncs it, then renames it over the target (same folder).

    A failed write (disk full) raises :class:`CheckpointWriteError` and leaves the target as it was.
    Reading a checkpoint that is damaged, or that needs full unpickling while ``weights_only=True``, raises
    :class:`RunDirError` with one line naming the file (and, for a damaged one, the newest intact ``step-N.ckpt``).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        if not _is_local_file_protocol(str(path)):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        try:
            with atomic_output(path) as tmp, open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            kept = f"the previous {path.name} is intact" if path.exists() else "nothing was replaced"
            problem = f"{path}: cannot write the checkpoint: {err.strerror or err}; {kept}"
            raise CheckpointWriteError(err.errno, problem) from None

    def load_checkpoint(
        self,
        path: str | os.PathLike,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except FileNotFoundError:
            raise
        except pickle.UnpicklingError as err:
            needs = unsupported_global(err)
            if needs is None:  # the unpickler stumbled on the bytes themselves: a damaged file
                check_resume_checkpoint(Path(path))
                raise RunDirError(f"{path}: checkpoint damaged (cannot be unpickled); {_way_out(Path(path))}") from None
            raise RunDirError(
                f"{path}: refused: it holds Python objects beyond tensors and plain containers (it needs {needs}), "
                "and checkpoints are loaded with weights_only=True; resume only from checkpoints this trainer wrote"
            ) from None
        except Exception as err:  # noqa: BLE001 - a damaged file: name it and the way out
            if not _is_local_file_protocol(str(path)):
                raise
            reason = str(err).split(". ")[0].rstrip(".") if str(err) else type(err).__name__
            problem = "truncated or damaged" if not is_intact(Path(path)) else "cannot be read"
            raise RunDirError(f"{path}: checkpoint {problem} ({reason}); {_way_out(Path(path))}") from None


def _way_out(path: Path) -> str:
    """What to resume from instead of the damaged ``path``: the newest intact ``step-N.ckpt`` beside it."""
    other = newest_intact_step_checkpoint(path.parent, other_than=path)
    return f"resume from the newest intact one: --resume {other}" if other else "no intact step-N.ckpt beside it"


def check_resume_checkpoint(path: Path) -> None:
    """Refuse at once (before the model is built) a checkpoint to resume from that is not a torch checkpoint at all
    (random bytes, text, another format): ``RunDirError`` naming it, and the newest intact ``step-N.ckpt`` beside
    it."""
    problem = torch_file_problem(path)
    if problem is not None:
        raise RunDirError(f"{path}: {problem}; {_way_out(path)}")


class StepCheckpoint(ModelCheckpoint):
    """``step-N.ckpt`` every ``every_n_steps`` optimizer steps; with ``keep_last`` (``train.keep_last_checkpoints``)
    only the newest K remain. The files are counted on disk after each save, so checkpoints written before a resume
    count too (ModelCheckpoint's own top-k list only knows what the resumed-from checkpoint recorded); files of steps
    beyond the current one (a resume from an older checkpoint) are left alone. A failed save deletes nothing."""

    def __init__(self, dirpath: str | os.PathLike, every_n_steps: int, keep_last: int | None = None) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="step-{step:09d}",
            auto_insert_metric_name=False,
            every_n_train_steps=every_n_steps,
            save_top_k=-1,
            save_last=False,  # last.ckpt belongs to LastCheckpoint
        )
        self.keep_last = keep_last

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, *args, **kwargs)
        self.prune(trainer)

    def prune(self, trainer: pl.Trainer) -> list[Path]:
        """Delete all but the newest ``keep_last`` step checkpoints up to the current step (rank 0); returns them."""
        if self.keep_last is None or not trainer.is_global_zero or self.dirpath is None:
            return []
        found = sorted(
            (int(m.group(1)), p) for p in Path(self.dirpath).glob("step-*.ckpt") if (m := _STEP_CKPT.match(p.name))
        )
        old = [p for n, p in found if n <= trainer.global_step][: -self.keep_last]
        for path in old:
            path.unlink(missing_ok=True)
        return old
