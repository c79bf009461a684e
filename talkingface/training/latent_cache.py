"""Build the latent cache (:mod:`talkingface.data.latent_cache`): encode every frame of a dataset and its masked
version with the frozen first stage, once, so training decodes no JPEG and runs no VQ encoder::

    python -m talkingface.training.latent_cache build data/HDTF --config configs/latent-diffusion/talking.yaml \\
        --out data/HDTF/latents --device cuda

then train with ``data.latent_cache=data/HDTF/latents``. The builder lives with training because it needs the model;
the cache's format and reader stay in ``talkingface.data``.

``--out`` may be a new folder, or with ``--overwrite`` a cache this command built (a folder holding only the cache's
files). It may not hold the dataset nor lie inside its folders: inside the dataset root it must be a folder of its own
there (``<root>/latents``, the default).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from talkingface.data.dataset import load_frame, to_unit
from talkingface.data.latent_cache import (
    CACHE_FORMAT,
    CACHE_VERSION,
    DTYPES,
    LATENTS_FILE,
    MASKED_FILE,
    LatentCacheError,
    cache_folder_problem,
    first_stage_signature,
    weights_fingerprint,
    write_cache_meta,
)
from talkingface.data.layout import (
    AUDIO_SMOOTH_DIR,
    DATA_TXT,
    DONE_DIR,
    IMAGES_DIR,
    LANDMARKS_DIR,
    META_JSON,
    TMP_DIR,
    DatasetLayout,
)
from talkingface.paths import is_within, replace_folder

log = logging.getLogger(__name__)

#: What the dataset layout keeps directly in its root: never a cache folder, even while empty.
_DATASET_ENTRIES = frozenset({IMAGES_DIR, LANDMARKS_DIR, AUDIO_SMOOTH_DIR, DATA_TXT, META_JSON, TMP_DIR, DONE_DIR})


class _FrameImages:
    """Every frame of the dataset (in cache-row order) as ``(image, masked)`` float tensors (3, S, S) in [-1, 1]."""

    def __init__(self, layout: DatasetLayout, counts: list[int], size: int) -> None:
        self.layout, self.size = layout, size
        self.frames = [(v, f) for v, n in enumerate(counts, 1) for f in range(n)]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, masked, _, scaler = load_frame(self.layout, *self.frames[i], self.size)
        frame_size = int(round(scaler * self.size))

        def chw(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(to_unit(x)).permute(2, 0, 1).contiguous()

        return chw(image), chw(masked), frame_size


def check_cache_out(root: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> None:
    """Fail (``LatentCacheError`` naming ``--out``) unless building into ``out`` loses nothing: ``out`` is new (or
    an empty folder), or, with ``overwrite``, a cache this command built; and it neither holds the dataset ``root``
    nor lies inside the dataset's folders (a folder of its own directly in ``root``, like the default
    ``<root>/latents``, is fine). Symbolic links and ``..`` are resolved."""
    root_real, out_real = Path(root).resolve(), Path(out).resolve()
    if is_within(root_real, out_real):
        what = "is the dataset folder" if out_real == root_real else f"holds the dataset {root}"
        raise LatentCacheError(f"--out: {out} {what}; give the cache a folder of its own (default <root>/latents)")
    if is_within(out_real, root_real) and (out_real.parent != root_real or out_real.name in _DATASET_ENTRIES):
        inside = out_real.relative_to(root_real).parts[0]
        where = "is" if out_real.parent == root_real else "is inside"
        raise LatentCacheError(
            f"--out: {out} {where} the dataset's {inside!r}; give the cache a folder of its own (default "
            "<root>/latents)"
        )
    if not os.path.lexists(out_real) or (out_real.is_dir() and not any(out_real.iterdir())):
        return
    problem = cache_folder_problem(out_real)
    if problem is not None:
        raise LatentCacheError(f"--out: {out} exists and is not a latent cache ({problem}); nothing was replaced")
    if not overwrite:
        raise LatentCacheError(f"--out: {out} exists; pass --overwrite to rebuild it")


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
    ``out`` must pass :func:`check_cache_out` (checked again before the old cache is replaced).
    """
    if dtype not in DTYPES:
        raise LatentCacheError("--dtype", f"{dtype!r}: use one of {', '.join(DTYPES)}")
    root, given = Path(root), Path(out)
    check_cache_out(root, given, overwrite)
    out = given.resolve()  # a symbolic link to a cache keeps pointing at the rebuilt one
    layout = DatasetLayout(root)
    counts = layout.read_data_txt()
    size = model_cfg.first_stage.resolution
    shape = (model_cfg.first_stage.embed_dim, model_cfg.unet.image_size, model_cfg.unet.image_size)
    frames = _FrameImages(layout, counts, size)
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
            "format": CACHE_FORMAT,
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
        write_cache_meta(tmp, meta)
        check_cache_out(root, given, overwrite)  # the build took a while: out may have changed
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("latent cache of %d frames written to %s", len(frames), out)
    return out


if __name__ == "__main__":  # the older spelling of ``talkingface cache``
    from talkingface.cli_support import hand_over

    hand_over("cache")
