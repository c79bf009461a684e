"""The run folder: one run at a time (a lock), ``--overwrite-run`` deletes only a run, a failed start leaves nothing."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from command_support import only_error_line
from fs_support import tree_bytes
from train_support import ROOT, tiny_overrides, train_argv

from talkingface.commands.train import main
from talkingface.training.run_dir import RunDirError, RunPaths, claim_run_dir

LOCK = ".lock"  # <run folder>/.lock, named in the error line


def _write(files: dict[Path, bytes]) -> dict[Path, bytes]:
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _run_files(run: Path) -> dict[Path, bytes]:
    """A run folder as the trainer leaves it (today's and earlier versions: config snapshot and command record)."""
    return _write(
        {
            run / "configs" / "config.yaml": b"model: {}\n",
            run / "configs" / "command.txt": b"2024-01-01T00:00:00 trainer/DiffTalkTrainer.py -t\n",
            run / "checkpoints" / "step-000000100.ckpt": b"a checkpoint",
            run / "checkpoints" / "last.ckpt": b"a checkpoint",
            run / "images" / "train" / "step-000000100.png": b"an image",
        }
    )


@pytest.fixture
def held_lock(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/run/.lock`` held by another open file, as a run started before would hold it."""
    run = tmp_path / "run"
    run.mkdir()
    fd = os.open(run / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield run
    os.close(fd)


# ------------------------------------------------------------------------------------------------ the lock


@pytest.mark.parametrize("how", ["new run", "--overwrite-run", "--resume"])
def test_a_second_run_into_a_folder_another_run_holds_is_refused_and_touches_nothing(
    held_lock: Path, tiny_dataset: Path, capsys: Any, how: str
) -> None:
    run = held_lock
    files = _run_files(run)  # the other run's files, half-way through
    argv = {
        "new run": train_argv(run, tiny_dataset, **{"train.max_steps": 1}),
        "--overwrite-run": train_argv(run, tiny_dataset, "--overwrite-run", **{"train.max_steps": 1}),
        "--resume": ["--resume", str(run), "-t", *tiny_overrides(tiny_dataset)],
    }[how]
    capsys.readouterr()
    rc = main(argv)
    line = only_error_line(capsys.readouterr().err)
    assert rc == 2
    assert f"{run / LOCK}: another run holds this lock" in line, line
    assert tree_bytes(run) == {str(p.relative_to(run)): d for p, d in files.items()} | {LOCK: b""}


@pytest.mark.slow
def test_the_lock_is_the_run_folders_own_and_dies_with_its_process(tmp_path: Path) -> None:
    from talkingface.training.run_dir import run_lock

    run = tmp_path / "run"
    run.mkdir()
    with run_lock(run), pytest.raises(RunDirError, match="another run holds this lock"):
        with run_lock(run):  # another open file of the same lock, as another process has
            pass
    with run_lock(tmp_path), run_lock(run):  # another folder's lock is another lock; released above
        pass
    holder = "import sys, time; from talkingface.training.run_dir import run_lock\n"
    holder += "with run_lock(__import__('pathlib').Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", holder, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=str(run / LOCK)):
            with run_lock(run):
                pass
    finally:
        proc.kill()  # SIGKILL: no clean-up code runs
        proc.wait(timeout=30)
    with run_lock(run):  # the OS released it
        pass


def test_only_the_launching_process_takes_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """DDP processes Lightning starts (LOCAL_RANK > 0), ranks > 0 and other nodes' launchers must not wait for, or be
    refused by, the lock their launcher holds (tests/training/test_train_ddp.py trains 2 processes under it)."""
    from pytorch_lightning.utilities import rank_zero_only

    from talkingface.training.run import launches_the_run

    monkeypatch.delenv("NODE_RANK", raising=False)
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    assert launches_the_run()
    monkeypatch.setenv("NODE_RANK", "1")
    assert not launches_the_run()
    monkeypatch.setenv("NODE_RANK", "0")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert not launches_the_run()


# ------------------------------------------------------------------------------------------------ --overwrite-run


def _not_a_run(folder: Path) -> dict[Path, bytes]:
    """A project checkout: its own configs/, checkpoints/ and images/, no trainer command record."""
    return _write(
        {
            folder / "README.md": b"# my project\n",
            folder / "configs" / "config.yaml": b"mine: 1\n",
            folder / "configs" / "latent-diffusion" / "talking.yaml": b"model: {}\n",
            folder / "checkpoints" / "model.ckpt": b"weights downloaded for hours",
            folder / "images" / "logo.png": b"a logo",
        }
    )


@pytest.mark.parametrize("overwrite", [True, False])
def test_a_folder_that_is_not_a_run_is_never_deleted_from(
    tiny_dataset: Path, tmp_path: Path, capsys: Any, overwrite: bool
) -> None:
    project = tmp_path / "project"
    files = _not_a_run(project)
    capsys.readouterr()
    rc = main(train_argv(project, tiny_dataset, *(["--overwrite-run"] if overwrite else []), **{"train.max_steps": 1}))
    line = only_error_line(capsys.readouterr().err)
    assert rc == 2
    assert f"--run-dir {project}: is not a training run" in line and "nothing deleted" in line, line
    assert "--overwrite-run" not in line  # no advice to delete it
    for path, data in files.items():
        assert path.read_bytes() == data, path


@pytest.mark.parametrize("without", ["configs/config.yaml", "configs/command.txt"])
def test_overwrite_needs_both_the_config_snapshot_and_the_command_record(tmp_path: Path, without: str) -> None:
    run = tmp_path / "run"
    _run_files(run)
    (run / without).unlink()
    before = tree_bytes(run)
    with pytest.raises(RunDirError, match="is not a training run"):
        claim_run_dir(RunPaths(run), overwrite=True)
    assert tree_bytes(run) == before


def test_overwrite_deletes_a_runs_folders_and_nothing_else(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run_files(run)
    _write({run / "tensorboard" / "events.out.tfevents.1": b"curves", run / "notes.txt": b"mine"})
    claim_run_dir(RunPaths(run), overwrite=True)
    assert tree_bytes(run) == {"notes.txt": b"mine"}
    claim_run_dir(RunPaths(run))  # now free


# ------------------------------------------------------------------------------------------------ failed starts


def _bad_start(tmp_path: Path, case: str) -> tuple[list[str], dict[str, object]]:
    if case == "first stage":
        return [], {"model.first_stage.ckpt_path": tmp_path / "missing" / "model.ckpt"}
    if case == "teacher":
        teacher = tmp_path / "teacher.ckpt"
        teacher.write_bytes(b"not a checkpoint")
        return [], {"distill.teacher": teacher}
    if torch.cuda.is_available():
        pytest.skip("--gpus without a GPU needs a machine without one")
    return ["--gpus", "0,"], {}


@pytest.mark.parametrize("case", ["first stage", "teacher", "gpus"])
@pytest.mark.parametrize("folder", ["new", "existing"])
def test_a_start_that_fails_before_training_leaves_no_half_made_run(
    tiny_dataset: Path, tmp_path: Path, capsys: Any, case: str, folder: str
) -> None:
    flags, extra = _bad_start(tmp_path, case)
    if folder == "new":
        run = tmp_path / "logs" / "run"
    else:
        run = tmp_path / "run"
        _write({run / "notes.txt": b"mine", run / "images" / "keep.png": b"mine too"})
    before = tree_bytes(run) if run.exists() else None
    capsys.readouterr()
    assert main(train_argv(run, tiny_dataset, *flags, **{"train.max_steps": 1, **extra})) == 2
    only_error_line(capsys.readouterr().err)
    if before is None:
        assert not (tmp_path / "logs").exists()
    else:  # what was there stays, and nothing else but the lock file
        assert tree_bytes(run) == before | {LOCK: b""}
        claim_run_dir(RunPaths(run))  # the next try is not refused


class _FailAt(pl.Callback):
    """Raises at the start of a given step (0: before the first), as a crash in a data worker or the strategy would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"crash at step {self.step}")


def test_a_crash_before_the_first_step_removes_the_new_run_folder(tiny_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash at step 0"):
        main(train_argv(run, tiny_dataset, **{"train.max_steps": 2}), [_FailAt(0)])
    assert not run.exists()


def test_a_crash_after_the_first_step_keeps_the_run(tiny_dataset: Path, tmp_path: Path) -> None:
    from talkingface.training.run_dir import run_lock

    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash at step 1"):
        main(train_argv(run, tiny_dataset, **{"train.max_steps": 2}), [_FailAt(1)])
    assert (run / "configs" / "config.yaml").is_file() and (run / "configs" / "command.txt").is_file()
    with run_lock(run):  # released when the run ended, even by an exception
        pass


def test_a_run_dir_that_is_a_file_is_refused_at_once(tiny_dataset: Path, tmp_path: Path, capsys: Any) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"mine")
    capsys.readouterr()
    assert main(train_argv(notes, tiny_dataset, **{"train.max_steps": 1})) == 2
    assert f"--run-dir {notes}: is a file" in only_error_line(capsys.readouterr().err)
    assert notes.read_bytes() == b"mine"
