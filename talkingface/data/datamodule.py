"""LightningDataModule over the preprocessed layout (train / validation split lists)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from talkingface.constants import MODEL_IMAGE_SIZE, REFERENCE_MIN_DISTANCE
from talkingface.data.dataset import TalkDataset
from talkingface.data.latent_cache import LatentCache
from talkingface.data.layout import IMAGE, DatasetLayout, read_split
from talkingface.data.meta import DatasetMetaError, check_feature_kind

log = logging.getLogger(__name__)


def _ignore_sigint(worker_id: int) -> None:
    """Workers ignore Ctrl-C: the trainer finishes its step and checkpoints, then shuts the workers down."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


class TalkDataModule(pl.LightningDataModule):
    """Train/val loaders of :class:`TalkDataset`; :meth:`check` runs at ``setup`` and fails early and clearly.

    ``expected_audio_feature``: the feature kind the model was built for (``"logmel29"``, ``"deepspeech29"``,
    ``"wav2vec2-ctc29"`` or a dict); ``None`` checks only the dimensions. ``latent_cache``: a folder of
    precomputed first-stage latents (``python -m talkingface.training.latent_cache build``); items then carry latents
    instead of images.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        train_list: str | os.PathLike,
        val_list: str | os.PathLike,
        batch_size: int,
        num_workers: int,
        image_size: int = MODEL_IMAGE_SIZE,
        reference_min_distance: int = REFERENCE_MIN_DISTANCE,
        expected_audio_feature: str | dict[str, Any] | None = None,
        latent_cache: str | os.PathLike | None = None,
        seed: int = 0,
        shuffle_audio: bool = False,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.train_list = Path(train_list)
        self.val_list = Path(val_list)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.reference_min_distance = reference_min_distance
        self.expected_audio_feature = expected_audio_feature
        self.latent_cache = latent_cache
        self.seed = seed
        self.shuffle_audio = shuffle_audio
        self.meta: dict[str, Any] | None = None
        self.train_set: TalkDataset | None = None
        self.val_set: TalkDataset | None = None

    def check(self) -> dict[str, Any]:
        """Meta present, feature kind and dims as expected, split lists present and naming existing frames."""
        layout = DatasetLayout(self.root)
        meta = layout.read_meta()
        check_feature_kind(meta, self.expected_audio_feature)
        counts = layout.read_data_txt()
        images = layout.folder(IMAGE)
        if not images.is_dir():
            raise DatasetMetaError(f"{images}: missing")
        present = {entry.name for entry in os.scandir(images)}
        for split in (self.train_list, self.val_list):
            videos, frames = read_split(split)
            if len(videos) == 0:
                raise DatasetMetaError(f"{split}: empty split list")
            for v, f in zip(videos.tolist(), frames.tolist()):
                if not 1 <= v <= len(counts) or f >= counts[v - 1] or IMAGE.name(v, f) not in present:
                    raise DatasetMetaError(f"{split}: names {v}_{f}, which is not in {self.root} (run validate)")
        del present
        if self.latent_cache is not None:
            LatentCache(self.latent_cache, expected_counts=counts)  # raises LatentCacheError (a DatasetMetaError)
        return meta

    def setup(self, stage: str | None = None) -> None:
        if self.meta is None:
            self.meta = self.check()
        kwargs = {
            "image_size": self.image_size,
            "reference_min_distance": self.reference_min_distance,
            "latent_cache": self.latent_cache,
        }
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = TalkDataset(
                self.root, self.train_list, seed=self.seed, shuffle_audio=self.shuffle_audio, **kwargs
            )
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = TalkDataset(self.root, self.val_list, seed=self.seed + 1, **kwargs)

    def _loader(self, dataset: TalkDataset, train: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=generator if train else None,
            worker_init_fn=_ignore_sigint,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        return self._loader(self.val_set, train=False)
