"""A folder the command cannot write into is refused up front, in one line naming it, before any work whose result
would be lost (building and training the model, computing the metrics, loading the checkpoint): ``train --run-dir``,
``--logdir`` and ``--resume``, ``evaluate --out``, ``export``. Nothing is half-written.

Folders are made read-only with chmod; as root, where permissions are not enforced, ``fs_support.make_read_only``
makes ``os.access`` (what the checks ask) say so, and writes are made to fail with a patched ``os.open``."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from command_support import one_error, run_cli
from fs_support import make_read_only
from train_support import TINY_CONFIG, tiny_overrides, write_run_folder

from talkingface.paths import atomic_write_bytes


@pytest.fixture
def locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "locked"
    folder.mkdir()
    make_read_only(folder, monkeypatch)
    yield folder
    folder.chmod(0o755)


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer must refuse before it builds the model."""
    import talkingface.training.run as training_run

    def build_module(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model must not be built")

    monkeypatch.setattr(training_run, "build_module", build_module)


# ----------------------------------------------------------------------------- train


@pytest.mark.parametrize("where", ["inside", "itself", "logdir"])
def test_train_refuses_a_run_folder_it_cannot_write(
    where: str, locked: Path, tiny_dataset: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", "--base", str(TINY_CONFIG), *tiny_overrides(tiny_dataset), "-t"]
    target = {"inside": ["--run-dir", str(locked / "run")], "itself": ["--run-dir", str(locked)]}
    assert run_cli([*base, *target.get(where, ["--logdir", str(locked)])]) == 2
    line = one_error(capsys)
    assert line.startswith(f"error: {locked}: folder not writable"), line
    assert line.endswith("--logdir" if where == "logdir" else "--run-dir"), line
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("part", ["checkpoints", "configs", "."])
def test_resume_refuses_a_run_it_cannot_write_before_training(
    part: str,
    tmp_path: Path,
    tiny_dataset: Path,
    no_training: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It used to train to the end and then fail to write last.ckpt (or fail on the config snapshot's temporary
    file, naming that file)."""
    root = write_run_folder(tiny_dataset, tmp_path / "run")
    folder = (root / part).resolve()
    before = sorted(p.name for p in folder.iterdir())
    make_read_only(folder, monkeypatch)
    try:
        assert run_cli(["train", "--resume", str(root), "-t"]) == 2
    finally:
        folder.chmod(0o755)
    line = one_error(capsys)
    assert line.startswith(f"error: {root / part if part != '.' else root}: folder not writable; fix its permissions")
    assert sorted(p.name for p in folder.iterdir()) == before


# ----------------------------------------------------------------------------- evaluate


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return folder


def test_evaluate_refuses_an_out_folder_it_cannot_write_before_computing(
    frames: Path, locked: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import talkingface.evaluate.harness as harness

    def evaluate(*args: object, **kwargs: object) -> None:
        raise AssertionError("the metrics must not be computed")

    monkeypatch.setattr(harness, "evaluate", evaluate)
    for out in (locked / "report.json", locked / "sub" / "report.json"):
        assert (
            run_cli(["evaluate", "--pred", str(frames), "--gt", str(frames), "--crop", "full", "--out", str(out)]) == 2
        )
        line = one_error(capsys)
        assert line.startswith(f"error: {locked}: folder not writable") and line.endswith(
            "give another --out or fix the folder's permissions"
        )
    assert list(locked.iterdir()) == []


def test_evaluate_writes_its_report_whole_or_not_at_all(
    frames: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A write that fails after the chart (e.g. permissions changed meanwhile) leaves no part of the report."""
    import talkingface.evaluate.report as report

    out = tmp_path / "reports" / "report.json"

    def write_markdown(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(out.with_suffix(".md")))

    argv = ["evaluate", "--pred", str(frames), "--gt", str(frames), "--crop", "full", "--out", str(out)]
    real = report.write_markdown
    monkeypatch.setattr(report, "write_markdown", write_markdown)
    assert run_cli(argv) == 2
    assert one_error(capsys).startswith(f"error: {out.with_suffix('.md')}: Permission denied")
    assert list(out.parent.iterdir()) == []  # no chart, no JSON, no hidden staging folder
    monkeypatch.setattr(report, "write_markdown", real)
    assert run_cli(argv) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.json", "report.md", "report.png"]


# ----------------------------------------------------------------------------- export and atomic writes


def test_export_refuses_an_output_folder_it_cannot_write(
    tmp_path: Path, locked: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import talkingface.training.export as export

    def export_checkpoint(*args: object, **kwargs: object) -> None:
        raise AssertionError("the checkpoint must not be loaded")

    monkeypatch.setattr(export, "export_checkpoint", export_checkpoint)
    ckpt = tmp_path / "last.ckpt"
    torch.save({}, ckpt)
    assert run_cli(["export", str(ckpt), str(locked / "difftalk.safetensors")]) == 2
    line = one_error(capsys)
    assert line.startswith(f"error: {locked}: folder not writable"), line
    assert list(locked.iterdir()) == []


def test_an_atomic_write_that_cannot_start_names_the_folder(
    locked: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not the hidden temporary file (``.x.bin.1234.abcd.tmp``) that nobody asked for."""
    real_open = os.open

    def denied(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if Path(str(path)).parent == locked and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(PermissionError) as info:
        atomic_write_bytes(locked / "x.bin", b"data")
    assert info.value.filename == str(locked) and "x.bin" in info.value.strerror
    assert list(locked.iterdir()) == []
