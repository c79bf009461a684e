"""Precomputed first-stage latents of every frame and of its masked version.

The frozen VQ encoder costs as much as the UNet per training sample (it encodes the target, the reference and the
masked target). Its output for a given frame never changes, so it is computed once::

    python -m talkingface.data.latent_cache build data/HDTF --config configs/latent-diffusion/talking.yaml \\
        --out data/HDTF/latents --device cuda

and used by training with ``data.latent_cache=data/HDTF/latents``. Layout of the cache folder:

- ``latents.npy``: ``(N, C, h, w)`` latents of every frame (``first_stage_model.encode``, not quantized, not
  multiplied by ``scale_factor``), row ``offset[v] + f`` for frame ``<v>_<f>``, videos in ``data.txt`` order;
- ``masked_latents.npy``: the same for the masked frames (lower half zeroed below the nose, as in training);
- ``meta.json``: frame counts, latent shape, dtype, image and frame sizes, the first-stage config and a
  fingerprint of its weights.

Rows are read through memory maps, so a worker touches only the rows of its batch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from talkingface.cli_support import ArgumentParser, report, split_overrides
from talkingface.data.meta import DatasetMetaError, read_data_txt

log = logging.getLogger(__name__)

CACHE_VERSION = 1
META_FILE, LATENTS_FILE, MASKED_FILE = "meta.json", "latents.npy", "masked_latents.npy"
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


def read_cache_meta(cache_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(cache_dir) / META_FILE
    if not path.is_file():
        raise LatentCacheError(
            f"{path}: missing. Build the cache with `python -m talkingface.data.latent_cache build <root> --out "
            f"{cache_dir}`."
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise LatentCacheError(f"{path}: unreadable ({err})") from None
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
    counts = read_data_txt(root)
    if list(meta["counts"]) != list(counts):
        raise LatentCacheError(f"{where}: frame counts differ from {Path(root) / 'data.txt'}; rebuild the cache")
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
        return np.asarray(self._array(LATENTS_FILE)[self.row(v, f)], dtype=np.float32)

    def masked_latent(self, v: int, f: int) -> np.ndarray:
        return np.asarray(self._array(MASKED_FILE)[self.row(v, f)], dtype=np.float32)


# ----------------------------------------------------------------------------------------------------- building
class _FrameImages:
    """Every frame of the dataset (in cache-row order) as ``(image, masked)`` float tensors (3, S, S) in [-1, 1]."""

    def __init__(self, root: str, counts: list[int], size: int) -> None:
        self.root, self.size = root, size
        self.names = [f"{v}_{f}" for v, n in enumerate(counts, 1) for f in range(n)]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[Any, Any, int]:
        import torch

        from talkingface.data.dataset import _to_unit, load_frame

        image, masked, _, scaler = load_frame(self.root, self.names[i], self.size)
        frame_size = int(round(scaler * self.size))

        def chw(x: np.ndarray) -> Any:
            return torch.from_numpy(_to_unit(x)).permute(2, 0, 1).contiguous()

        return chw(image), chw(masked), frame_size


def build_first_stage(first_stage_cfg: Any) -> Any:
    """The VQ first stage alone (no UNet) from the ``model.first_stage`` config."""
    from talkingface.model.image_driven_talkingface.DiffTalk.model import build_first_stage as build

    return build(first_stage_cfg)


def build_latent_cache(
    root: str | os.PathLike,
    out: str | os.PathLike,
    model_cfg: Any,
    first_stage: Any,
    device: str = "cpu",
    batch_size: int = 32,
    num_workers: int = 4,
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Encode every frame and its masked version with ``first_stage`` (a ``VQModel`` with loaded weights).

    Written to a temporary folder next to ``out`` and renamed at the end, so ``out`` is complete or absent.
    """
    import torch
    from torch.utils.data import DataLoader

    if dtype not in DTYPES:
        raise LatentCacheError(f"dtype {dtype!r}: use one of {DTYPES}")
    root, out = Path(root), Path(out)
    if out.exists():
        if not overwrite:
            raise LatentCacheError(f"{out} exists; pass --overwrite to rebuild it")
    counts = read_data_txt(root)
    size = model_cfg.first_stage.resolution
    shape = (model_cfg.first_stage.embed_dim, model_cfg.unet.image_size, model_cfg.unet.image_size)
    frames = _FrameImages(str(root), counts, size)
    tmp = out.with_name(f".{out.name}.building-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        latents = np.lib.format.open_memmap(tmp / LATENTS_FILE, mode="w+", dtype=dtype, shape=(len(frames), *shape))
        masked = np.lib.format.open_memmap(tmp / MASKED_FILE, mode="w+", dtype=dtype, shape=(len(frames), *shape))
        first_stage = first_stage.to(device).eval()
        loader = DataLoader(frames, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        frame_sizes: set[int] = set()
        row = 0
        with torch.no_grad():
            for images, masked_images, sizes in loader:
                n = images.shape[0]
                both = torch.cat([images, masked_images]).to(device).float()
                z = first_stage.encode(both).float().cpu().numpy()
                latents[row : row + n] = z[:n]
                masked[row : row + n] = z[n:]
                frame_sizes.update(int(s) for s in sizes)
                row += n
                if row // batch_size % 50 == 0:
                    log.info("encoded %d / %d frames", row, len(frames))
        latents.flush()
        masked.flush()
        del latents, masked
        if len(frame_sizes) > 1:
            raise LatentCacheError(f"{root}: frames of several sizes {sorted(frame_sizes)}; frames must be square")
        meta = {
            "version": CACHE_VERSION,
            "complete": True,
            "dataset_root": str(root.resolve()),
            "counts": counts,
            "latent_shape": list(shape),
            "dtype": dtype,
            "image_size": size,
            "frame_size": frame_sizes.pop() if frame_sizes else size,
            "first_stage": {
                "config": first_stage_signature(model_cfg.first_stage),
                "fingerprint": weights_fingerprint(first_stage),
            },
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("latent cache of %d frames written to %s", len(frames), out)
    return out


def _build_command(args: argparse.Namespace) -> int:
    import torch

    from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import (
        first_stage_state_dict,
        load_checkpoint_file,
        load_state_dict_strict,
    )
    from talkingface.model.image_driven_talkingface.DiffTalk.config import load_config

    cfg = load_config(args.config, args.overrides)
    ckpt = args.first_stage or cfg.model.first_stage.ckpt_path
    first_stage = build_first_stage(cfg.model.first_stage)
    if ckpt:
        sd = first_stage_state_dict(load_checkpoint_file(ckpt, args.trust_checkpoint))
        load_state_dict_strict(first_stage, sd, source=f"first-stage checkpoint {ckpt}")
    elif not args.allow_random_first_stage:
        raise LatentCacheError(
            "no first-stage checkpoint: pass --first-stage models/model.ckpt (or set model.first_stage.ckpt_path)"
        )
    torch.set_grad_enabled(False)
    build_latent_cache(
        args.root,
        args.out or Path(args.root) / "latents",
        cfg.model,
        first_stage,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        dtype=args.dtype,
        overwrite=args.overwrite,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m talkingface.data.latent_cache", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="encode every frame and its masked version with the frozen first stage")
    b.add_argument("root", help="dataset root (images/, landmarks/, data.txt)")
    b.add_argument("--out", help="cache folder (default <root>/latents)")
    b.add_argument("--config", default="configs/latent-diffusion/talking.yaml", help="DiffTalk config YAML")
    b.add_argument("--first-stage", help="VQ checkpoint (default: model.first_stage.ckpt_path of the config)")
    b.add_argument("--device", default="cuda" if _cuda() else "cpu")
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--num-workers", type=int, default=4)
    b.add_argument("--dtype", choices=DTYPES, default="float32", help="float16 halves the size (lossy)")
    b.add_argument("--overwrite", action="store_true")
    b.add_argument("--trust-checkpoint", action="store_true", help="allow full unpickling of the VQ checkpoint")
    b.add_argument("--allow-random-first-stage", action="store_true", help=argparse.SUPPRESS)
    parser.epilog = "KEY=VALUE arguments override the config, e.g. model.first_stage.ch=32"
    overrides, rest = split_overrides(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(rest)
    args.overrides = overrides
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _build_command(args)
    except (LatentCacheError, ValueError, RuntimeError) as err:
        return report(err)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


if __name__ == "__main__":
    sys.exit(main())
