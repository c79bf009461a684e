"""Precomputed first-stage latents of every frame and of its masked version: the cache folder's format and reader.

The frozen VQ encoder costs as much as the UNet per training sample (it encodes the target, the reference and the
masked target). Its output for a given frame never changes, so it is computed once by the builder, which needs the
model and so lives with training (:mod:`talkingface.training.latent_cache`)::

    python -m talkingface.training.latent_cache build data/HDTF --config configs/latent-diffusion/talking.yaml \\
        --out data/HDTF/latents --device cuda

and used by training with ``data.latent_cache=data/HDTF/latents``. Layout of the cache folder:

- ``latents.npy``: ``(N, C, h, w)`` latents of every frame (``first_stage_model.encode``, not quantized, not
  multiplied by ``scale_factor``), row ``offset[v] + f`` for frame ``<v>_<f>``, videos in ``data.txt`` order;
- ``masked_latents.npy``: the same for the masked frames (lower half zeroed below the nose, as in training);
- ``meta.json``: ``"format": "talkingface-latent-cache"`` (caches built before it lack that key), frame counts,
  latent shape, dtype, image and frame sizes, the first-stage config and a fingerprint of its weights.

The folder holds nothing else, so the builder's ``--overwrite`` replaces only a folder that :func:`cache_folder_problem`
recognises as a cache.

Rows are read through memory maps, so a worker touches only the rows of its batch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from talkingface.data.layout import DatasetLayout
from talkingface.data.meta import DatasetMetaError

CACHE_VERSION = 1
#: ``meta.json`` "format" of a cache: it tells a cache's meta.json from a dataset's.
CACHE_FORMAT = "talkingface-latent-cache"
META_FILE, LATENTS_FILE, MASKED_FILE = "meta.json", "latents.npy", "masked_latents.npy"
CACHE_FILES = (META_FILE, LATENTS_FILE, MASKED_FILE)
#: Keys of every cache's meta.json, also of those written before "format" existed (a dataset's has none of these).
_CACHE_KEYS = ("counts", "latent_shape", "first_stage")
DTYPES = ("float32", "float16")


class LatentCacheError(DatasetMetaError):
    """A latent cache is missing, incomplete or does not match the dataset or the model."""


def first_stage_signature(first_stage_cfg: Any) -> dict[str, Any]:
    """The first-stage architecture fields that determine its latents (everything but the checkpoint path)."""
    d = asdict(first_stage_cfg) if not isinstance(first_stage_cfg, dict) else dict(first_stage_cfg)
    d.pop("ckpt_path", None)
    return d


def weights_fingerprint(module: Any) -> str:
    """SHA-1 of a module's state dict (names, shapes and float32 bytes)."""
    h = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def write_cache_meta(cache_dir: str | os.PathLike, meta: dict[str, Any]) -> None:
    """The cache's ``meta.json`` (written last by the builder: its ``complete`` flag marks a finished cache)."""
    (Path(cache_dir) / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def is_cache_meta(meta: Any) -> bool:
    """``meta`` (a parsed meta.json) is a latent cache's: it says so, or (older caches) has a cache's keys."""
    if not isinstance(meta, dict):
        return False
    if "format" in meta:
        return meta["format"] == CACHE_FORMAT
    return all(key in meta for key in _CACHE_KEYS)


def cache_folder_problem(cache_dir: str | os.PathLike) -> str | None:
    """None when ``cache_dir`` is a folder that holds a latent cache and nothing else (so replacing it loses no other
    file); else why it is not one."""
    path = Path(cache_dir)
    if path.is_symlink():
        return "a symbolic link"
    if not path.is_dir():
        return "not a folder"
    extra = sorted(p.name for p in path.iterdir() if p.name not in CACHE_FILES)
    if extra:
        return f"it holds {extra[0]!r}, which is not a latent cache file"
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"no readable {META_FILE} of a latent cache"
    if not is_cache_meta(meta):
        return f"its {META_FILE} is not a latent cache's"
    return None


def read_cache_meta(cache_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(cache_dir) / META_FILE
    if not path.is_file():
        raise LatentCacheError(
            f"{path}: missing. Build the cache with `python -m talkingface.training.latent_cache build <root> --out "
            f"{cache_dir}`."
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise LatentCacheError(f"{path}: unreadable ({err})") from None
    if not is_cache_meta(meta):
        raise LatentCacheError(f"{path}: not the meta.json of a latent cache")
    if not meta.get("complete"):
        raise LatentCacheError(f"{path}: the cache is incomplete (its build was interrupted); build it again")
    for key in ("version", "counts", "latent_shape", "dtype", "frame_size", "image_size", "first_stage"):
        if key not in meta:
            raise LatentCacheError(f"{path}: missing key {key!r}")
    if meta["version"] != CACHE_VERSION:
        raise LatentCacheError(f"{path}: cache version {meta['version']}, expected {CACHE_VERSION}; rebuild it")
    return meta


def check_latent_cache(
    cache_dir: str | os.PathLike, root: str | os.PathLike, model_cfg: Any, first_stage: Any = None
) -> dict[str, Any]:
    """Fail unless the cache matches the dataset's ``data.txt`` and the model config (and, when given, the loaded
    first-stage weights). Returns the cache meta."""
    meta = read_cache_meta(cache_dir)
    where = Path(cache_dir) / META_FILE
    layout = DatasetLayout(root)
    if list(meta["counts"]) != list(layout.read_data_txt()):
        raise LatentCacheError(f"{where}: frame counts differ from {layout.data_txt_path}; rebuild the cache")
    fs, unet = model_cfg.first_stage, model_cfg.unet
    expected_shape = [fs.embed_dim, unet.image_size, unet.image_size]
    if list(meta["latent_shape"]) != expected_shape:
        raise LatentCacheError(f"{where}: latents of shape {meta['latent_shape']}, the model needs {expected_shape}")
    if meta["image_size"] != fs.resolution:
        raise LatentCacheError(f"{where}: built from {meta['image_size']}px images, the model uses {fs.resolution}")
    if meta["first_stage"].get("config") != first_stage_signature(fs):
        raise LatentCacheError(f"{where}: built with another first-stage config; rebuild it")
    if first_stage is not None and meta["first_stage"].get("fingerprint") != weights_fingerprint(first_stage):
        raise LatentCacheError(f"{where}: built with other first-stage weights than the model's; rebuild it")
    for name in (LATENTS_FILE, MASKED_FILE):
        if not (Path(cache_dir) / name).is_file():
            raise LatentCacheError(f"{Path(cache_dir) / name}: missing")
    return meta


class LatentCache:
    """Read access to a cache: ``latent(v, f)`` / ``masked_latent(v, f)`` -> float32 ``(C, h, w)``.

    Memory maps are opened lazily in each process (so the object pickles small for spawned workers).
    """

    def __init__(self, cache_dir: str | os.PathLike, expected_counts: list[int] | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        meta = read_cache_meta(cache_dir)
        if expected_counts is not None and list(meta["counts"]) != list(expected_counts):
            raise LatentCacheError(f"{self.cache_dir / META_FILE}: frame counts differ from the dataset's data.txt")
        self.counts = np.asarray(meta["counts"], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.frame_size = int(meta["frame_size"])
        self.latent_shape = tuple(meta["latent_shape"])
        self._arrays: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state

    def _array(self, name: str) -> np.ndarray:
        arr = self._arrays.get(name)
        if arr is None:
            arr = np.load(self.cache_dir / name, mmap_mode="r")
            self._arrays[name] = arr
        return arr

    def row(self, v: int, f: int) -> int:
        if not 1 <= v <= len(self.counts) or not 0 <= f < self.counts[v - 1]:
            raise LatentCacheError(f"{self.cache_dir}: no frame {v}_{f}")
        return int(self.offsets[v - 1] + f)

    def latent(self, v: int, f: int) -> np.ndarray:
        """A writable float32 copy (the cache is memory-mapped read-only; torch warns on collating such views)."""
        return np.array(self._array(LATENTS_FILE)[self.row(v, f)], dtype=np.float32)

    def masked_latent(self, v: int, f: int) -> np.ndarray:
        return np.array(self._array(MASKED_FILE)[self.row(v, f)], dtype=np.float32)


if __name__ == "__main__":  # the builder needs the model, so it lives with training
    import sys

    sys.stderr.write("error: the latent cache builder is `python -m talkingface.training.latent_cache build ...`\n")
    sys.exit(2)
