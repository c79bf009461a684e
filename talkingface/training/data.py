"""Dataset sanity checks at trainer start and the datamodule built from the config."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from talkingface.data.latent_cache import LatentCacheError, check_latent_cache
from talkingface.data.layout import read_split
from talkingface.data.meta import DatasetMetaError, check_feature_kind
from talkingface.errors import TalkingFaceError
from talkingface.model.image_driven_talkingface.DiffTalk.config import DiffTalkConfig
from talkingface.training.config import TrainingConfig

log = logging.getLogger(__name__)


class DataCheckError(TalkingFaceError, ValueError):
    """The dataset does not fit the config (or is broken): raised before any process or worker starts."""


def data_check_error(err: TalkingFaceError) -> DataCheckError:
    """``err`` (a problem of the dataset or its latent cache) as a :class:`DataCheckError` with the same line."""
    if err.where is None:
        return DataCheckError(err.problem, hint=err.hint)
    return DataCheckError(err.where, err.problem, hint=err.hint)


def expected_audio_feature(cfg: DiffTalkConfig) -> dict[str, Any]:
    """What the model consumes, in the form of ``meta.json``'s ``audio_feature`` entry."""
    c = cfg.model.conditioning
    expected: dict[str, Any] = {"dim": c.audio_feature_dim, "window": c.audio_window, "smooth": c.audio_smooth_windows}
    if c.audio_feature_kind is not None:
        expected["kind"] = c.audio_feature_kind
    return expected


def build_datamodule(cfg: TrainingConfig, meta: dict[str, Any] | None = None) -> Any:
    """``TalkDataModule`` for ``cfg.data``; pass the ``meta`` of :func:`check_dataset` to skip re-checking."""
    from talkingface.data.datamodule import TalkDataModule

    d = cfg.data
    dm = TalkDataModule(
        root=d.root,
        train_list=d.train_list,
        val_list=d.val_list,
        batch_size=d.batch_size,
        num_workers=d.num_workers,
        image_size=d.image_size,
        reference_min_distance=d.reference_min_distance,
        expected_audio_feature=expected_audio_feature(cfg),
        latent_cache=d.latent_cache,
        seed=d.seed,
        shuffle_audio=d.shuffle_audio,
    )
    if meta is not None:
        dm.meta = meta
    return dm


def check_dataset(cfg: TrainingConfig) -> dict[str, Any]:
    """Check meta.json, the audio feature kind and dimensions against the config, the split lists (and the latent
    cache when configured). ``cfg`` is not changed; the dataset's feature kind is in the returned meta
    (``meta["audio_feature"]["kind"]``).

    Raises:
        DataCheckError: naming the file and the problem.
    """
    d = cfg.data
    root = Path(d.root)
    if not root.is_dir():
        raise DataCheckError(
            root,
            "dataset folder not found (data.root)",
            hint="build the dataset with talkingface preprocess run ... or set data.root=PATH on the command line",
        )
    if d.image_size != cfg.model.first_stage.resolution:
        raise DataCheckError(
            f"data.image_size ({d.image_size}) must equal model.first_stage.resolution "
            f"({cfg.model.first_stage.resolution})"
        )
    try:
        meta = build_datamodule(cfg).check()
        check_feature_kind(meta, expected_audio_feature(cfg))
    except DatasetMetaError as err:
        raise data_check_error(err) from None
    saved = int(meta.get("image_size") or 0)
    if 0 < saved < d.image_size:
        log.warning(
            "%s: frames saved at %d px are upscaled to the model's %d px (data.image_size); for a %d-pixel model "
            "build the dataset with `talkingface preprocess run ... --size %d` (or larger)",
            root,
            saved,
            d.image_size,
            d.image_size,
            d.image_size,
        )
    if d.latent_cache is not None:
        try:
            check_latent_cache(d.latent_cache, root, cfg.model)
        except LatentCacheError as err:
            raise data_check_error(err) from None
    log.info("dataset %s: audio features %s, splits %s / %s", root, meta["audio_feature"], d.train_list, d.val_list)
    return meta


def check_batch_fits(cfg: TrainingConfig, world_size: int) -> int:
    """The number of training samples; each process must get at least one full batch of them.

    The training loader drops the last incomplete batch and the distributed sampler gives each of the ``world_size``
    processes ``ceil(samples / world_size)`` samples, so a larger ``data.batch_size`` would train zero steps.

    Raises:
        DataCheckError: naming the batch size and the number of samples.
    """
    try:
        samples = len(read_split(cfg.data.train_list)[0])
    except DatasetMetaError as err:
        raise data_check_error(err) from None
    per_process = -(-samples // world_size)
    batch = cfg.data.batch_size
    if batch > per_process:
        spread = f" ({samples} over {world_size} processes)" if world_size > 1 else ""
        raise DataCheckError(
            f"data.batch_size ({batch}) is larger than the {samples} training samples of {cfg.data.train_list}: "
            f"{per_process} per process{spread}; incomplete batches are dropped, so not one step would run. "
            "Lower data.batch_size or add training data"
        )
    return samples
