"""Sample grids as PNG files (cv2 + numpy; no torchvision)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from talkingface.paths import atomic_write_bytes

#: Columns of a training sample grid, left to right.
GRID_COLUMNS = ("inputs", "reference", "masked", "samples")


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8 RGB."""
    x = ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(columns: Mapping[str, torch.Tensor], order: Sequence[str] = GRID_COLUMNS, pad: int = 2) -> np.ndarray:
    """One row per sample, one column per key of ``order`` (missing keys skipped): (H', W', 3) uint8 RGB."""
    keys = [k for k in order if k in columns]
    if not keys:
        raise ValueError(f"no images to grid: expected some of {list(order)}, got {list(columns)}")
    tiles = [to_uint8_hwc(columns[k]) for k in keys]
    n, h, w, _ = tiles[0].shape
    grid = np.full((n * (h + pad) + pad, len(keys) * (w + pad) + pad, 3), 255, np.uint8)
    for c, tile in enumerate(tiles):
        if tile.shape != tiles[0].shape:
            raise ValueError(f"grid column {keys[c]!r} has shape {tile.shape}, expected {tiles[0].shape}")
        for r in range(n):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[y : y + h, x : x + w] = tile[r]
    return grid


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image atomically as PNG."""
    import cv2

    path = Path(path)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError(f"could not encode PNG for {path}")
    return atomic_write_bytes(path, data.tobytes())
