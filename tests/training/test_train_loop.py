"""The DiffTalk trainer end to end on CPU with a tiny model: learning, checkpoints, resume, samples, export."""

from __future__ import annotations

import copy
import logging
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from train_support import FEATURE_KIND, TINY_CONFIG, InterruptAt, tiny_overrides

from talkingface.commands.train import main
from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference
from talkingface.model.image_driven_talkingface.DiffTalk.config import load_config
from talkingface.training import module as training_module
from talkingface.training.module import LatentDiffusion


def _run_dir(logdir: Path) -> Path:
    (run,) = [p for p in logdir.iterdir() if p.is_dir()]
    return run


def _ema(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state_dict.items() if k.startswith("model_ema.")}


def test_training_steps_lower_the_loss_on_a_fixed_batch(tiny_dataset: Path) -> None:
    """AdamW + clip 0.1 through Lightning on one repeated batch: the loss at fixed (t, noise) goes down."""
    cfg = load_config(TINY_CONFIG, tiny_overrides(tiny_dataset))
    module = LatentDiffusion(cfg.model, learning_rate=1e-3)
    g = torch.Generator().manual_seed(0)
    batch = {
        "latent": torch.randn(2, 3, 16, 16, generator=g),
        "reference_latent": torch.randn(2, 3, 16, 16, generator=g),
        "masked_latent": torch.randn(2, 3, 16, 16, generator=g),
        "landmarks": torch.rand(2, 39, 2, generator=g) * 64,
        "audio_smooth": torch.randn(2, 8, 16, 29, generator=g),
    }
    t = torch.tensor([100, 600])
    noise = torch.randn(2, 3, 16, 16, generator=g)

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(module.shared_step(batch, t=t, noise=noise)[0])

    class Repeat(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 64

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {k: v[i % 2] for k, v in batch.items()}

    before = fixed_loss()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=12,
        gradient_clip_val=0.1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader(Repeat(), batch_size=2, shuffle=False))
    after = fixed_loss()
    assert after < 0.8 * before, (before, after)
    assert int(module.model_ema.num_updates) == 12  # one EMA update per optimizer step


class _Record(pl.Callback):
    def __init__(self) -> None:
        self.start_step: int | None = None
        self.start_ema: dict[str, torch.Tensor] = {}
        self.steps: list[int] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_step = trainer.global_step
        self.start_ema = _ema(pl_module.state_dict())

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.steps.append(trainer.global_step)


@pytest.mark.slow
def test_interrupt_writes_checkpoint_and_resume_continues(tiny_dataset: Path, tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    base = ["--base", str(TINY_CONFIG), "-t", "-l", str(logdir)]
    rc = main([*base, *tiny_overrides(tiny_dataset, **{"train.max_steps": 6})], extra_callbacks=[InterruptAt(2)])
    assert rc == 128 + signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    run = _run_dir(logdir)
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)  # plain tensors and containers only
    assert ckpt["global_step"] == 3  # the interrupted step finished, then the run stopped
    saved_ema = _ema(ckpt["state_dict"])
    assert int(saved_ema["model_ema.num_updates"]) == 3
    assert "audio_feature_kind" not in ckpt  # stored once, inside difftalk_config
    assert ckpt["difftalk_config"]["model"]["conditioning"]["audio_feature_kind"] == FEATURE_KIND
    assert "hyper_parameters" not in ckpt
    assert len(ckpt["optimizer_states"]) == 1 and ckpt["optimizer_states"][0]["state"]

    record = _Record()
    assert main(["--resume", str(run), "-t"], extra_callbacks=[record]) == 0
    assert record.start_step == 3
    assert record.steps == [4, 5, 6]
    assert record.start_ema.keys() == saved_ema.keys()
    for k, v in saved_ema.items():
        assert torch.equal(record.start_ema[k], v), k
    final = torch.load(last, map_location="cpu", weights_only=True)
    assert final["global_step"] == 6 and int(final["state_dict"]["model_ema.num_updates"]) == 6
    assert (run / "configs" / "command.txt").read_text().count("DiffTalkTrainer.py") == 2
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


class _TermDuringStep(pl.Callback):
    """Sends SIGTERM to this process, as a scheduler would, in the middle of optimizer step ``step`` (after the
    backward pass, before the weights change)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_optimizer_step(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class _RecordState(pl.Callback):
    """The step, the whole state dict (EMA included) and the optimizer state as training (re)starts."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.step = trainer.global_step
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())
        self.bars: list[tuple[int, int, int]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        bar = trainer.progress_bar_callback.train_progress_bar
        self.bars.append((bar.total, bar.initial, bar.n))


def _same(a: Any, b: Any, where: str = "") -> None:
    """Nested dicts/lists of tensors and numbers are identical (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, set(a) ^ set(b))
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@pytest.mark.slow
def test_sigterm_mid_step_then_resume_restores_step_ema_and_optimizer(
    tiny_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    """SIGTERM at a seeded step: the step finishes, last.ckpt is written, exit 128 + 15. --resume starts at that very
    step with the checkpoint's weights, EMA and AdamW state, bit for bit; keep_last_checkpoints=2 keeps the newest two
    step-N.ckpt across the resume (also those written before it); the progress bar counts steps up to max_steps
    from the resumed step (a total, and an ETA from this run's steps only); no Lightning tips or known noise."""
    step = random.Random(15).randrange(1, 4)
    run = tmp_path / "run"
    extra = {"train.max_steps": step + 3, "train.checkpoint_every_n_steps": 1, "train.keep_last_checkpoints": 2}
    argv = ["--base", str(TINY_CONFIG), "-t", "--run-dir", str(run), *tiny_overrides(tiny_dataset, **extra)]
    assert main(argv, extra_callbacks=[_TermDuringStep(step)]) == 128 + signal.SIGTERM
    ckpts = run / "checkpoints"
    ckpt = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == step + 1  # the interrupted step finished
    assert int(ckpt["state_dict"]["model_ema.num_updates"]) == step + 1
    record = _RecordState()
    caplog.set_level(logging.INFO)
    assert main(["--resume", str(run), "-t"], extra_callbacks=[record]) == 0
    assert record.step == step + 1
    assert record.bars[0] == (step + 3, step + 1, step + 2) and record.bars[-1][2] == step + 3, record.bars
    noise = ("💡 Tip", "weights_only", "LeafSpec", "exists and is not empty")
    said = [r.getMessage() for r in caplog.records] + [str(w.message) for w in recwarn]
    assert not [line for line in said if any(n in line for n in noise)], said
    _same(record.state, ckpt["state_dict"], "state_dict")
    assert ckpt["optimizer_states"][0]["state"]  # AdamW moments exist, and came back unchanged
    _same(record.optimizer, ckpt["optimizer_states"][0], "optimizer")
    newest = {f"step-{n:09d}.ckpt" for n in (step + 2, step + 3)}
    assert {p.name for p in ckpts.glob("step-*.ckpt")} == newest


@pytest.mark.slow
def test_checkpoint_loads_for_inference_and_grids_and_export(tiny_dataset: Path, tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    extra = {
        "train.max_steps": 2,
        "train.image_log_every_n_steps": 2,
        "train.image_log_ddim_steps": 2,
        "train.export_slim_on_end": True,
        "train.channels_last": True,
    }
    assert main(["--base", str(TINY_CONFIG), "-t", "-l", str(logdir), *tiny_overrides(tiny_dataset, **extra)]) == 0
    run = _run_dir(logdir)
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["difftalk_ema.safetensors", "difftalk_ema.yaml", "last.ckpt"]

    model = get_difftalk_inference(ckpt=ckpts / "last.ckpt", device="cpu")  # config and kind from the checkpoint
    assert model.config.conditioning.audio_feature_kind == FEATURE_KIND
    assert model.config.unet.image_size == 16

    import cv2

    (grid_path,) = (run / "images" / "train").glob("step-*.png")
    grid = cv2.imread(str(grid_path))
    assert grid.shape == (2 + 2 * (64 + 2), 2 + 4 * (64 + 2), 3)  # 2 samples x (input, reference, masked, sample)

    # the slim export (EMA UNet + encoders) gives the same model as the full checkpoint with EMA weights
    vq = tmp_path / "vq.ckpt"
    torch.save({"state_dict": model.first_stage_model.state_dict()}, vq)
    slim = get_difftalk_inference(
        config=ckpts / "difftalk_ema.yaml", ckpt=ckpts / "difftalk_ema.safetensors", first_stage_ckpt=vq, device="cpu"
    )
    for k, v in model.model.state_dict().items():
        assert torch.equal(v, slim.model.state_dict()[k]), k


def test_data_check_fails_early_with_a_clear_message(tiny_dataset: Path, tmp_path: Path, capsys: Any) -> None:
    base = ["--base", str(TINY_CONFIG), "-l", str(tmp_path / "logs")]
    overrides = tiny_overrides(tiny_dataset, **{"model.conditioning.audio_feature_kind": "deepspeech29"})
    capsys.readouterr()
    assert main([*base, "-t", *overrides]) == 2
    err = capsys.readouterr().err
    assert "deepspeech29" in err and "logmel29" in err and err.count("error:") == 1
    assert not (tmp_path / "logs").exists()  # nothing started
    assert main([*base, *tiny_overrides(tiny_dataset, **{"data.train_list": tmp_path / "nope.txt"})]) == 2
    assert "nope.txt" in capsys.readouterr().err
    # without -t: checks only
    assert main([*base, *tiny_overrides(tiny_dataset)]) == 0
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("fused", [False, True])
def test_bf16_mixed_precision_step_runs(tiny_dataset: Path, tmp_path: Path, monkeypatch: Any, fused: bool) -> None:
    # fused=True: the optimiser the trainer builds on a GPU. Lightning's AMP plugin refuses to clip gradients for
    # the fused AdamW; on an H100 `train.precision=bf16-mixed` crashed at the first step. The fused kernel also
    # exists on CPU, so pretending the parameters qualify reproduces that crash here.
    monkeypatch.setattr(training_module, "fused_adamw_supported", lambda params: fused)
    extra = {"train.max_steps": 2, "train.precision": "bf16-mixed"}
    assert main(["--base", str(TINY_CONFIG), "-t", "-l", str(tmp_path), *tiny_overrides(tiny_dataset, **extra)]) == 0
    ckpt = torch.load(_run_dir(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
