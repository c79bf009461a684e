"""Helpers of the trainer tests (no tests here): a tiny on-disk dataset, tiny-model overrides, a Ctrl-C callback."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from talkingface.data.layout import DatasetLayout, write_split
from talkingface.data.meta import audio_feature_spec, dataset_meta
from talkingface.model.image_driven_talkingface.DiffTalk.config import save_config
from talkingface.training.config import load_training_config

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "latent-diffusion" / "talking-tiny.yaml"
TRAINER = ROOT / "trainer" / "DiffTalkTrainer.py"
SAVED = 64  # saved frame side = model image side in the tests (64 px -> 16 x 16 latents)
COUNTS = (12, 10)
FEATURE_KIND = "logmel29"


def write_dataset(
    parent: Path, counts: tuple[int, ...] = COUNTS, kind: str = FEATURE_KIND, dim: int = 29, size: int = SAVED
) -> Path:
    """``parent/HDTF`` in the preprocessed layout (random ``size``-pixel JPEGs, .lms, .npy with ``dim`` features,
    data.txt, meta.json) and the split lists ``parent/data_train.txt`` (video 1) and ``parent/data_test.txt`` (video
    2). The landmarks sit at the same place in the frame whatever ``size``."""
    layout = DatasetLayout(parent / "HDTF", split_dir=parent)
    layout.make_folders()
    rng = np.random.default_rng(0)
    rows = np.arange(68, dtype=np.float32)
    videos = {}
    for v, n in enumerate(counts, 1):
        for f in range(n):
            layout.write_frame(v, f, rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            lms = np.stack([4 + rows * 0.8 + 0.1 * f, 10 + rows * 0.6], axis=1)  # landmark 30 at y = 28 (64 px)
            lms *= size / SAVED
            layout.write_landmarks(v, f, lms)
            layout.write_audio(v, f, rng.normal(size=(8, 16, dim)).astype(np.float32))
        videos[str(v)] = {"source": f"v{v}.mp4", "frames": n, "status": "done"}
    settings = {"audio_feature": audio_feature_spec(kind, dim), "fps": 25, "image_size": size}
    layout.write_meta(dataset_meta(settings, videos))
    layout.write_data_txt(counts)
    write_split(layout.train_list, [1], counts)
    write_split(layout.test_list, [2], counts)
    return layout.root


def tiny_overrides(data_root: Path, **extra: object) -> list[str]:
    """Dotlist for a very small, fast model on 64 px images, reading the dataset of :func:`write_dataset`."""
    parent = data_root.parent
    values: dict[str, object] = {
        "model.first_stage.resolution": SAVED,
        "model.unet.image_size": SAVED // 4,
        "model.unet.channel_mult": "[1,2]",
        "model.unet.attention_resolutions": "[2]",
        "model.unet.num_res_blocks": 1,
        "model.first_stage.num_res_blocks": 1,
        "model.first_stage.ch": 32,
        "model.base_learning_rate": 1e-4,
        "data.root": data_root,
        "data.train_list": parent / "data_train.txt",
        "data.val_list": parent / "data_test.txt",
        "data.image_size": SAVED,
        "data.batch_size": 2,
        "data.num_workers": 0,
        "data.reference_min_distance": 4,
        "train.num_sanity_val_steps": 0,
        "train.log_every_n_steps": 1,
        "train.image_log_every_n_steps": 0,
        "train.limit_val_batches": 1,
        "train.checkpoint_every_n_steps": 1000,
        "train.export_slim_on_end": False,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def train_argv(run: Path, data_root: Path, *flags: str, **extra: object) -> list[str]:
    """The trainer's argv for a tiny-config run into ``--run-dir run`` on ``data_root`` (:func:`tiny_overrides`
    with ``extra``), ``flags`` after ``--run-dir``."""
    return ["--base", str(TINY_CONFIG), "-t", "--run-dir", str(run), *flags, *tiny_overrides(data_root, **extra)]


def write_run_folder(tiny_dataset: Path, folder: Path) -> Path:
    """A run folder of the tiny model on ``tiny_dataset`` as the trainer leaves it: config snapshot, command record
    and a ``last.ckpt`` that is a torch file but no trainer checkpoint (for tests that stop before reading it)."""
    (folder / "configs").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    save_config(load_training_config(TINY_CONFIG, tiny_overrides(tiny_dataset)), folder / "configs" / "config.yaml")
    (folder / "configs" / "command.txt").write_text("trainer/DiffTalkTrainer.py -t\n")
    torch.save({"global_step": 1}, folder / "checkpoints" / "last.ckpt")
    return folder


#: The 512 config (latent-diffusion vq-f8: factor 8) with the tiny config's widths on top, for CPU tests.
F8_BASE = [ROOT / "configs" / "latent-diffusion" / "talking-512.yaml", TINY_CONFIG]
#: Model image side of the vq-f8 tests: 128 px -> 16 x 16 latents, the same latent side as the vq-f4 tests.
F8_SIDE = 128


def f8_overrides(data_root: Path, **extra: object) -> list[str]:
    """:func:`tiny_overrides` for ``--base`` :data:`F8_BASE`: a factor-8 first stage (four levels, attention in the
    last, as vq-f8) at :data:`F8_SIDE` pixels, reading a dataset of :func:`write_dataset` saved at that size."""
    values: dict[str, object] = {
        "model.first_stage.resolution": F8_SIDE,
        "model.first_stage.attn_resolutions": f"[{F8_SIDE // 8}]",
        "model.unet.image_size": F8_SIDE // 8,
        "data.image_size": F8_SIDE,
    }
    return tiny_overrides(data_root, **{**values, **extra})


class InterruptAt(pl.Callback):
    """Sends SIGINT to this process at the start of a given step (as Ctrl-C would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            signal.raise_signal(signal.SIGINT)
