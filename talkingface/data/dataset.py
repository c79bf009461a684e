"""The DiffTalk training dataset over the preprocessed layout, with the reference loader's semantics.

Memory stays flat as the dataset grows: items are two int32 arrays (video, frame) plus one int32 array of
frame counts; paths are formatted on demand, nothing per frame is a Python object.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, get_worker_info

from talkingface.constants import MODEL_IMAGE_SIZE, MODEL_LANDMARK_ROWS, REFERENCE_MIN_DISTANCE
from talkingface.data.latent_cache import LatentCache
from talkingface.data.layout import DatasetLayout, frame_name, read_split
from talkingface.data.masks import training_mask
from talkingface.data.meta import DatasetMetaError

log = logging.getLogger(__name__)

#: Smallest frame a reference can be (the reference draws from ``range(1, frame_count)``).
FIRST_REFERENCE_FRAME = 1


def draw_reference(frame: int, count: int, min_distance: int, rng: np.random.Generator) -> int:
    """A frame of the same video far from ``frame``, uniform over the reference loader's candidates.

    Candidates are ``range(1, count)`` minus ``range(frame - d, frame + d)`` (so ``|r - frame| >= d``). When a
    video is too short to have any, the farthest frame in ``range(1, count)`` is used instead (frame 0 when
    ``count == 1``).
    """
    last = count - 1
    low_n = max(0, min(last, frame - min_distance - 1) - FIRST_REFERENCE_FRAME + 1)  # 1 .. frame-d-1
    high_lo = max(FIRST_REFERENCE_FRAME, frame + min_distance)
    high_n = max(0, last - high_lo + 1)  # frame+d .. count-1
    if low_n + high_n == 0:
        if last < FIRST_REFERENCE_FRAME:
            return 0
        return FIRST_REFERENCE_FRAME if frame - FIRST_REFERENCE_FRAME >= last - frame else last
    k = int(rng.integers(low_n + high_n))
    return FIRST_REFERENCE_FRAME + k if k < low_n else high_lo + (k - low_n)


def to_unit(image: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1]."""
    return (image / 127.5 - 1.0).astype(np.float32)


def load_frame(
    layout: DatasetLayout, video: int, frame: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A frame and its masked version (uint8 ``(size, size, 3)``), its 68 landmarks and ``scaler = saved / size``.

    Shared by :class:`TalkDataset` and the latent cache builder, so cached latents encode exactly these pixels.
    """
    image, width = layout.read_frame_resized(video, frame, size)
    scaler = width / size
    landmarks = layout.read_landmarks(video, frame)
    mask = training_mask(landmarks, scaler, size)
    return image, (image * mask).astype(np.uint8), landmarks, scaler


class TalkDataset(Dataset):
    """Items of ``split_file`` (``<v>_<f>`` lines) read from ``root`` (``images/``, ``landmarks/``, ...).

    Each item is a dict: ``image``, ``reference_img``, ``image_mask`` (float32 ``(S, S, 3)`` in [-1, 1], channels
    last), ``landmarks`` (float32 ``(39, 2)``: rows 0-3 and 13-47 in ``S``-pixel units), ``audio_smooth`` (float32
    ``(8, 16, D)``, D from meta.json), ``name`` and ``reference_name`` (``<v>_<f>``); ``S = image_size``. Images
    are resized with PIL bicubic, like the reference.

    Unlike the reference (one reference frame per item drawn at construction), the reference frame is drawn
    in every ``__getitem__`` from a generator seeded with ``(seed, worker id)``, so runs are reproducible and
    epochs see different references.

    ``latent_cache``: a folder built by ``python -m talkingface.training.latent_cache build``. Items then hold
    ``latent``, ``reference_latent`` and ``masked_latent`` (float32 ``(C, h, w)`` first-stage latents) instead of
    the three images, and no JPEG is decoded.

    ``shuffle_audio``: the control experiment of the learnability benchmark. Item ``i`` gets the audio window of
    item ``perm[i]``, a fixed permutation of the split drawn from ``seed``, so the audio carries no information
    about the mouth while its statistics stay those of the split.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split_file: str | os.PathLike,
        image_size: int = MODEL_IMAGE_SIZE,
        reference_min_distance: int = REFERENCE_MIN_DISTANCE,
        seed: int = 0,
        latent_cache: str | os.PathLike | None = None,
        shuffle_audio: bool = False,
    ) -> None:
        self.root = str(Path(root))
        self.layout = DatasetLayout(root)
        counts = self.layout.read_data_txt()
        self.latent_cache = None
        if latent_cache is not None:
            self.latent_cache = LatentCache(latent_cache, expected_counts=counts)
        self.image_size = int(image_size)
        self.reference_min_distance = int(reference_min_distance)
        self.seed = int(seed)
        self.counts = np.asarray(counts, dtype=np.int32)
        self.videos, self.frames = read_split(split_file)
        bad = (self.videos < 1) | (self.videos > len(self.counts))
        if not bad.any():
            bad = self.frames >= self.counts[self.videos - 1]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DatasetMetaError(
                f"{split_file}: {int(bad.sum())} item(s) name frames that data.txt does not have, "
                f"first {self.videos[i]}_{self.frames[i]}"
            )
        self.audio_source = np.arange(len(self.videos))
        if shuffle_audio:
            self.audio_source = np.random.default_rng([self.seed, 0xA0D10]).permutation(len(self.videos))
        self._rng: np.random.Generator | None = None
        self._rng_worker: int | None = None
        self._warned_short = False

    def __len__(self) -> int:
        return len(self.videos)

    def _generator(self) -> np.random.Generator:
        info = get_worker_info()
        worker = info.id if info is not None else -1
        if self._rng is None or self._rng_worker != worker:
            self._rng = np.random.default_rng([self.seed, worker + 1])
            self._rng_worker = worker
        return self._rng

    def reference_frame(self, index: int, rng: np.random.Generator | None = None) -> int:
        v, f = int(self.videos[index]), int(self.frames[index])
        count = int(self.counts[v - 1])
        if count - 1 - FIRST_REFERENCE_FRAME < self.reference_min_distance and not self._warned_short:
            self._warned_short = True
            log.warning(
                "video %d has %d frames: some frames have no reference %d frames away; the farthest is used",
                v,
                count,
                self.reference_min_distance,
            )
        return draw_reference(f, count, self.reference_min_distance, rng or self._generator())

    def __getitem__(self, index: int) -> dict[str, Any]:
        v, f = int(self.videos[index]), int(self.frames[index])
        name = frame_name(v, f)
        if self.latent_cache is not None:
            return self._cached_item(index, v, f)
        size = self.image_size
        image, image_mask, landmarks, scaler = load_frame(self.layout, v, f, size)
        ref = self.reference_frame(index)
        reference, _ = self.layout.read_frame_resized(v, ref, size)
        return {
            "image": to_unit(image),
            "reference_img": to_unit(reference),
            "image_mask": to_unit(image_mask),
            "landmarks": (landmarks[list(MODEL_LANDMARK_ROWS)] / scaler).astype(np.float32),
            "audio_smooth": self._audio(index),
            "name": name,
            "reference_name": frame_name(v, ref),
        }

    def _audio(self, index: int) -> np.ndarray:
        """The audio window of item ``index`` (of another item when ``shuffle_audio`` is on)."""
        j = int(self.audio_source[index])
        return self.layout.read_audio(int(self.videos[j]), int(self.frames[j]))

    def _cached_item(self, index: int, v: int, f: int) -> dict[str, Any]:
        """The item from the latent cache: no image is decoded (landmarks scaled by the cache's frame size)."""
        cache = self.latent_cache
        assert cache is not None
        name = frame_name(v, f)
        landmarks = self.layout.read_landmarks(v, f)
        scaler = cache.frame_size / self.image_size
        ref = self.reference_frame(index)
        return {
            "latent": cache.latent(v, f),
            "reference_latent": cache.latent(v, ref),
            "masked_latent": cache.masked_latent(v, f),
            "landmarks": (landmarks[list(MODEL_LANDMARK_ROWS)] / scaler).astype(np.float32),
            "audio_smooth": self._audio(index),
            "name": name,
            "reference_name": frame_name(v, ref),
        }
