"""Files the product writes atomically (a temporary file renamed into place) get the permissions of any other new
file, 0666 minus the umask: slim exports were 0600 (safetensors writes through a private temporary file)."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from golden import TINY_CONFIG

from talkingface.commands.export import main as export_main
from talkingface.model.image_driven_talkingface.DiffTalk.config import CONFIG_CKPT_KEY, config_to_dict
from talkingface.paths import atomic_output
from talkingface.training.callbacks import SlimExport
from talkingface.training.checkpoint_io import AtomicCheckpointIO
from talkingface.training.config import load_training_config
from talkingface.training.images import write_png
from talkingface.training.module import LatentDiffusion
from talkingface.training.run_dir import RunPaths, write_snapshot

UMASKS = [0o022, 0o002, 0o077]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The test runs under the umask it is parametrised with; the old one is restored after."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def module_and_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[LatentDiffusion, Path]:
    """A tiny training module and its trainer checkpoint (state dict + config)."""
    cfg = load_training_config(TINY_CONFIG)
    torch.manual_seed(0)
    module = LatentDiffusion(cfg.model, run_config=config_to_dict(cfg)).eval()
    path = tmp_path_factory.mktemp("modes") / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), CONFIG_CKPT_KEY: config_to_dict(cfg)}, path)
    return module, path


@pytest.mark.parametrize("umask", UMASKS, indirect=True)
@pytest.mark.slow
def test_slim_exports_follow_the_umask(
    umask: int, module_and_ckpt: tuple[LatentDiffusion, Path], tmp_path: Path
) -> None:
    module, ckpt = module_and_ckpt
    out = tmp_path / "export" / "difftalk.safetensors"
    assert export_main([str(ckpt), str(out)]) == 0  # `talkingface export`
    SlimExport(tmp_path / "run" / "difftalk_ema.safetensors").on_train_end(None, module)  # the end of training
    written = [out, out.with_suffix(".yaml"), tmp_path / "run" / "difftalk_ema.safetensors"]
    written.append(tmp_path / "run" / "difftalk_ema.yaml")
    modes = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in written}
    assert modes == dict.fromkeys(modes, oct(0o666 & ~umask))
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file() and p not in written]
    assert not leftovers, leftovers


@pytest.mark.parametrize("umask", UMASKS, indirect=True)
def test_checkpoints_grids_and_config_snapshots_follow_the_umask(
    umask: int, module_and_ckpt: tuple[LatentDiffusion, Path], tmp_path: Path
) -> None:
    paths = RunPaths(tmp_path / "run")
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, paths.last_ckpt)
    write_png(paths.image_dir / "grid.png", np.zeros((4, 4, 3), np.uint8))
    write_snapshot(paths, load_training_config(TINY_CONFIG), ["train"])
    for path in (paths.last_ckpt, paths.image_dir / "grid.png", paths.config_snapshot):
        assert oct(mode(path)) == oct(0o666 & ~umask), path


@pytest.mark.parametrize("umask", UMASKS, indirect=True)
def test_a_writer_that_replaces_the_temporary_file_cannot_narrow_the_mode(umask: int, tmp_path: Path) -> None:
    """As safetensors does: the writer renames its own 0600 file (from mkstemp) over the temporary path."""
    target = tmp_path / "out.bin"
    with atomic_output(target) as tmp:
        fd, private = tempfile.mkstemp(dir=tmp_path)
        os.write(fd, b"data")
        os.close(fd)
        assert mode(Path(private)) == 0o600
        os.replace(private, tmp)
    assert target.read_bytes() == b"data" and mode(target) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
