"""The trainer refuses what would lose work or silently do nothing, with one ``error:`` line and exit status 2."""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from command_support import only_error_line
from train_support import TINY_CONFIG, tiny_overrides, train_argv

from talkingface.commands.export import main as export_main
from talkingface.commands.train import main
from talkingface.model.image_driven_talkingface.DiffTalk.config import ConfigError, load_config
from talkingface.training.config import load_training_config


def _fake_run(run: Path) -> dict[Path, bytes]:
    """A run folder as a previous run leaves it (contents are placeholders)."""
    files = {
        run / "configs" / "config.yaml": b"old config\n",
        run / "configs" / "command.txt": b"old command\n",
        run / "checkpoints" / "last.ckpt": b"old checkpoint",
        run / "checkpoints" / "difftalk_ema.safetensors": b"old export",
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


@pytest.mark.parametrize("flag", ["--run-dir", "--run_dir"])
def test_new_run_into_an_existing_run_folder_is_refused(
    tiny_dataset: Path, tmp_path: Path, capsys: Any, flag: str
) -> None:
    run = tmp_path / "run"
    files = _fake_run(run)
    capsys.readouterr()
    rc = main(
        ["--base", str(TINY_CONFIG), "-t", flag, str(run), *tiny_overrides(tiny_dataset, **{"train.max_steps": 1})]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("error:") == 1 and len(err.strip().splitlines()) == 1, err
    assert str(run) in err and "--resume" in err and "--overwrite-run" in err
    for path, data in files.items():
        assert path.read_bytes() == data, path  # nothing overwritten


def test_overwrite_run_starts_over_in_an_existing_run_folder(tiny_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _fake_run(run)
    (run / "checkpoints" / "step-000000050.ckpt").write_bytes(b"stale")
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out.tfevents.old").write_bytes(b"old curves")
    assert main(train_argv(run, tiny_dataset, "--overwrite-run", **{"train.max_steps": 1})) == 0
    assert (run / "checkpoints" / "last.ckpt").read_bytes() != b"old checkpoint"
    assert not (run / "checkpoints" / "step-000000050.ckpt").exists()  # no stale checkpoint of the old run
    assert not (run / "tensorboard" / "events.out.tfevents.old").exists()
    assert "old command" not in (run / "configs" / "command.txt").read_text()


def test_an_empty_run_folder_is_fine(tiny_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert main(train_argv(run, tiny_dataset, **{"train.max_steps": 1})) == 0
    assert (run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize(("batch", "devices", "samples"), [(12, 1, "11"), (7, 2, "6")])
def test_batch_larger_than_the_training_set_is_refused_at_start(
    tiny_dataset: Path, tmp_path: Path, capsys: Any, batch: int, devices: int, samples: str
) -> None:
    """11 training samples (frames 1-11 of video 1); the loader drops incomplete batches: no step would ever run."""
    overrides = tiny_overrides(tiny_dataset, **{"train.max_steps": 1, "data.batch_size": batch})
    capsys.readouterr()
    rc = main(["--base", str(TINY_CONFIG), "-t", "-l", str(tmp_path / "logs"), "--devices", str(devices), *overrides])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("error:") == 1 and "data.batch_size" in err and f"({batch})" in err and "11 training" in err, err
    assert f"{samples} per process" in err
    assert not (tmp_path / "logs").exists()  # nothing started


@pytest.mark.slow
def test_a_batch_as_large_as_the_training_set_trains(tiny_dataset: Path, tmp_path: Path) -> None:
    assert main(train_argv(tmp_path / "run", tiny_dataset, **{"train.max_steps": 1, "data.batch_size": 11})) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


class _SignalTwice(pl.Callback):
    """Sends the signal twice during one step, as an impatient operator or a scheduler's second SIGTERM would."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == 1:
            signal.raise_signal(self.signum)
            signal.raise_signal(self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_exits_at_once_with_128_plus_the_signal(
    tiny_dataset: Path, tmp_path: Path, signum: int
) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(SystemExit) as exit_info:
        main(train_argv(tmp_path / "run", tiny_dataset, **{"train.max_steps": 5}), [_SignalTwice(signum)])
    assert exit_info.value.code == 128 + signum  # Lightning's SIGTERMException would exit with status 0
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()  # at once: no checkpoint after the step
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored


@pytest.fixture(scope="module")
def trained_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-step run with ``step-000000001.ckpt``, ``step-000000002.ckpt`` and ``last.ckpt``."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(train_argv(run, tiny_dataset, **{"train.max_steps": 2, "train.checkpoint_every_n_steps": 1})) == 0
    return run


@pytest.mark.slow
def test_resume_from_a_truncated_checkpoint_names_it_and_the_newest_intact_one(
    trained_run: Path, tmp_path: Path, capsys: Any
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    ckpts = run / "checkpoints"
    for name in ("last.ckpt", "step-000000002.ckpt"):  # a disk full, a copy cut short
        data = (ckpts / name).read_bytes()
        (ckpts / name).write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert main(["--resume", str(run), "-t"]) == 2
    line = only_error_line(capsys.readouterr().err)
    assert str(ckpts / "last.ckpt") in line and f"--resume {ckpts / 'step-000000001.ckpt'}" in line, line


def test_resume_refuses_a_checkpoint_that_needs_full_unpickling_in_one_line(
    trained_run: Path, tmp_path: Path, capsys: Any
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    evil = run / "checkpoints" / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": argparse.Namespace(x=1)}, evil)  # not loadable with weights_only=True
    capsys.readouterr()
    assert main(["--resume", str(evil), "-t"]) == 2
    line = only_error_line(capsys.readouterr().err)
    assert str(evil) in line and "weights_only" in line, line


@pytest.mark.parametrize("flag", ["--base", "--options"])
def test_a_yaml_python_tag_is_one_error_line_and_never_runs(tmp_path: Path, capsys: Any, flag: str) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match="evil.yaml"):
        load_config(evil)
    capsys.readouterr()
    try:
        rc = main([flag, str(evil), "-l", str(tmp_path / "logs")])
    except SystemExit as exit_info:  # argparse's way out (--options)
        rc = exit_info.code
    assert rc == 2
    line = only_error_line(capsys.readouterr().err)
    assert str(evil) in line and "python/object/apply" in line, line
    assert not marker.exists()


def test_export_takes_the_trust_checkpoint_flag_its_refusal_suggests(
    trained_run: Path, tmp_path: Path, capsys: Any
) -> None:
    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["payload"] = argparse.Namespace(x=1)  # needs full unpickling
    pickled = tmp_path / "pickled.ckpt"
    torch.save(ckpt, pickled)
    out = tmp_path / "out" / "difftalk.safetensors"
    capsys.readouterr()
    assert export_main([str(pickled), str(out)]) == 2
    line = only_error_line(capsys.readouterr().err)
    assert str(pickled) in line and "--trust-checkpoint" in line, line
    assert not out.exists()
    assert export_main([str(pickled), str(out), "--trust-checkpoint"]) == 0
    assert out.is_file() and out.with_suffix(".yaml").is_file()


def _intact_step(path: Path) -> int:
    from talkingface.training.checkpoint_io import is_intact

    assert is_intact(path), path
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


@pytest.mark.slow
def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(
    tiny_dataset: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 5th checkpoint write (last.ckpt at step 3) hits a full disk after writing part of the file: one error line
    naming that checkpoint, exit 1; every checkpoint on disk is intact and the one named still holds step 2."""
    from talkingface.training import checkpoint_io

    real = torch.save
    written: list[str] = []

    def full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        written.append(f.name)
        if len(written) == 5:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_io.torch, "save", full)
    run = tmp_path / "run"
    extra = {"train.max_steps": 3, "train.checkpoint_every_n_steps": 1, "train.keep_last_checkpoints": 2}
    capsys.readouterr()
    assert main(train_argv(run, tiny_dataset, **extra)) == 1
    line = only_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and "intact" in line, line
    ckpts = run / "checkpoints"
    assert f"{ckpts / 'last.ckpt'}: cannot write" in line and "last.ckpt" in Path(written[4]).name, (line, written)
    steps = {p.name: _intact_step(p) for p in ckpts.glob("*.ckpt")}
    assert steps == {"last.ckpt": 2, "step-000000001.ckpt": 1, "step-000000002.ckpt": 2}, steps
    assert not [p for p in ckpts.iterdir() if not p.name.endswith(".ckpt")]  # no temporary file left


def test_keep_last_checkpoints_must_be_at_least_1(tiny_dataset: Path) -> None:
    with pytest.raises(ConfigError, match="train.keep_last_checkpoints"):
        load_training_config(TINY_CONFIG, tiny_overrides(tiny_dataset, **{"train.keep_last_checkpoints": 0}))
    assert load_training_config(TINY_CONFIG, tiny_overrides(tiny_dataset)).train.keep_last_checkpoints is None
