"""Small pieces of the trainer: device parsing, lr scaling, options, run folders, grids, atomic writes, validation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from train_support import TINY_CONFIG, tiny_overrides

from talkingface.commands.train import parse_args
from talkingface.model.image_driven_talkingface.DiffTalk.config import ConfigError, load_config
from talkingface.training.checkpoint_io import AtomicCheckpointIO
from talkingface.training.config import load_training_config
from talkingface.training.devices import DeviceSpecError, device_spec, parse_gpus
from talkingface.training.images import make_grid, write_png
from talkingface.training.lr import scaled_learning_rate
from talkingface.training.module import LatentDiffusion
from talkingface.training.run_dir import RunDirError, RunPaths, resolve_resume


def test_gpus_like_the_reference() -> None:
    assert parse_gpus("0,1,2,3,4,5,6,7,") == list(range(8))
    assert parse_gpus("0,") == [0]
    spec = device_spec("0,1,", num_nodes=2)
    assert (spec.accelerator, spec.devices, spec.strategy_name, spec.world_size) == ("gpu", [0, 1], "ddp", 4)
    assert device_spec("0,").strategy_name == "auto"
    cpu = device_spec(None)
    assert (cpu.accelerator, cpu.devices, cpu.world_size) == ("cpu", 1, 1)
    assert device_spec(None, cpu_devices=2).strategy_name == "ddp"
    for bad in (",", "a,b", "0,0,"):
        with pytest.raises(DeviceSpecError):
            parse_gpus(bad)


def test_lr_scaling_as_the_reference() -> None:
    assert scaled_learning_rate(1e-6, 8, 8, 2, True) == pytest.approx(1.28e-4)
    assert scaled_learning_rate(1e-6, 8, 8, 2, False) == 1e-6


def test_options_overrides_and_option_files(tmp_path: Path) -> None:
    args, overrides = parse_args(["--base", "a.yaml", "-t", "--gpus", "0,1,", "data.batch_size=4"])
    assert args.train is True and args.gpus == "0,1," and args.base == ["a.yaml"] and overrides == ["data.batch_size=4"]
    args, _ = parse_args(["-t", "false"])
    assert args.train is False
    opts = tmp_path / "opts.yaml"
    opts.write_text("gpus: '0,'\nlogdir: runs\n")
    args, _ = parse_args(["-c", str(opts), "--logdir", "mine"])
    assert args.gpus == "0," and args.logdir == "mine"  # the command line wins over the option file
    with pytest.raises(SystemExit):
        parse_args(["--bogus"])
    with pytest.raises(SystemExit):
        parse_args(["-n", "x", "-r", "y"])


def test_config_files_merge_left_to_right(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("data:\n  batch_size: 5\ntrain:\n  max_steps: 7\n")
    cfg = load_training_config([TINY_CONFIG, extra], ["train.max_steps=9"])
    assert (cfg.data.batch_size, cfg.train.max_steps, cfg.model.unet.model_channels) == (5, 9, 32)
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_training_config([tmp_path / "nope.yaml"], [])
    with pytest.raises(ConfigError, match="batchsize"):
        load_training_config([TINY_CONFIG], ["data.batchsize=3"])


def test_resume_targets(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    with pytest.raises(RunDirError, match="no such"):
        resolve_resume(paths.root)
    paths.create()
    with pytest.raises(RunDirError, match="never wrote"):
        resolve_resume(paths.root)
    paths.last_ckpt.write_bytes(b"x")
    with pytest.raises(RunDirError, match="config.yaml"):
        resolve_resume(paths.root)
    paths.config_snapshot.write_text("{}")
    assert resolve_resume(paths.root) == (paths, paths.last_ckpt)
    assert resolve_resume(paths.last_ckpt) == (paths, paths.last_ckpt)


def test_grid_png(tmp_path: Path) -> None:
    images = {k: torch.rand(2, 3, 8, 8) * 2 - 1 for k in ("inputs", "reference", "masked", "samples")}
    images["inputs"][0] = -1.0
    grid = make_grid(images, pad=2)
    assert grid.shape == (2 + 2 * 10, 2 + 4 * 10, 3) and grid.dtype == np.uint8
    assert (grid[2:10, 2:10] == 0).all()
    path = write_png(tmp_path / "g.png", grid)
    assert np.array_equal(cv2.imread(str(path))[..., ::-1], grid)


def test_atomic_checkpoint_io_leaves_old_file_on_failure(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"a": torch.ones(2)}, target)

    class Unpicklable:
        def __reduce__(self) -> None:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        io.save_checkpoint({"a": Unpicklable()}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_validation_logs_loss_with_and_without_ema(tmp_path: Path) -> None:
    cfg = load_config(TINY_CONFIG, tiny_overrides(tmp_path))
    module = LatentDiffusion(cfg.model)
    with torch.no_grad():  # make the EMA differ from the weights (whose zero-initialised output layer predicts 0)
        for _, buf in module.model_ema.named_buffers():
            if buf.is_floating_point() and buf.ndim:
                buf.add_(0.05 * torch.randn_like(buf))
    g = torch.Generator().manual_seed(0)
    items = [
        {
            "latent": torch.randn(3, 16, 16, generator=g),
            "reference_latent": torch.randn(3, 16, 16, generator=g),
            "masked_latent": torch.randn(3, 16, 16, generator=g),
            "landmarks": torch.rand(39, 2, generator=g) * 64,
            "audio_smooth": torch.randn(8, 16, 29, generator=g),
        }
        for _ in range(4)
    ]
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (first,) = trainer.validate(module, torch.utils.data.DataLoader(items, batch_size=2), verbose=False)
    (again,) = trainer.validate(module, torch.utils.data.DataLoader(items, batch_size=2), verbose=False)
    assert {"val/loss_simple", "val/loss", "val/loss_simple_ema", "val/loss_ema"} <= set(first)
    assert first["val/loss_simple"] != first["val/loss_simple_ema"]
    assert first == again  # fixed validation noise and timesteps


def test_count_or_fraction_reads_whole_numbers_as_batch_counts() -> None:
    """``train.limit_val_batches=1`` arrives as 1.0 and must mean one batch, not Lightning's 100 %."""
    from talkingface.training.run import count_or_fraction

    assert count_or_fraction(None) is None
    assert count_or_fraction(0.25) == 0.25
    assert count_or_fraction(1.0) == 1 and isinstance(count_or_fraction(1.0), int)
    assert count_or_fraction(4.0) == 4
    import pytest

    with pytest.raises(ValueError, match="whole number"):
        count_or_fraction(2.5)


def test_lr_warmup_rises_linearly_then_holds(tmp_path: Path) -> None:
    """train.lr_warmup_steps: the scheduler steps per optimizer step, from lr / warmup up to lr."""
    cfg = load_config(TINY_CONFIG, tiny_overrides(tmp_path))
    assert LatentDiffusion(cfg.model).configure_optimizers().__class__.__name__ == "AdamW"  # default: constant
    module = LatentDiffusion(cfg.model, learning_rate=1e-3, lr_warmup_steps=4)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
