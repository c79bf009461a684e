"""Reading a ``.npy`` file the user hands in (a ``--landmarks`` file, a dataset's audio features, AD-NeRF
DeepSpeech features) without trusting its header: the header is read and checked against the shape the caller
expects and against the bytes the file holds before any memory is taken, so that a header claiming 10^9 frames is
one error line, not a ``MemoryError`` (or the machine swapping). This module imports nothing of the package."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["NPY_MAGIC", "check_npy_header", "read_npy"]

#: How every ``.npy`` file begins.
NPY_MAGIC = b"\x93NUMPY"
#: How an ``.npz`` archive (a zip file) begins.
_ZIP_MAGIC = b"PK\x03\x04"


def _describe(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("N" if n is None else str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def check_npy_header(
    path: str | os.PathLike, shape: Sequence[int | None] | None = None
) -> tuple[tuple[int, ...], np.dtype]:
    """The ``(shape, dtype)`` the header of the ``.npy`` file ``path`` declares, once checked: a ``.npy`` file (not an
    ``.npz`` archive or other bytes), no Python objects, the shape ``shape`` when given (``None`` entries: any size)
    and no more data than the file holds. Raises ``ValueError`` with the problem (without the file name: the caller
    names the file), ``OSError`` when the file cannot be read."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(len(NPY_MAGIC))
        if magic != NPY_MAGIC:
            zipped = magic.startswith(_ZIP_MAGIC[: len(magic)]) and len(magic) >= len(_ZIP_MAGIC)
            raise ValueError("not a .npy file" + (" (an .npz archive? give one array as .npy)" if zipped else ""))
        f.seek(0)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            declared, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            declared, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not read here (1.0 and 2.0 are)")
        data_bytes = os.fstat(f.fileno()).st_size - f.tell()
    if dtype.hasobject:
        raise ValueError("holds Python objects, not numbers (saved with allow_pickle); save a numeric array")
    if shape is not None and (
        len(declared) != len(shape) or any(want is not None and got != want for got, want in zip(declared, shape))
    ):
        raise ValueError(f"array of shape {tuple(declared)}; expected {_describe(shape)}")
    needed = math.prod(declared) * dtype.itemsize
    if needed > data_bytes:
        raise ValueError(
            f"its header declares shape {tuple(declared)} ({needed:,} bytes of {dtype}) but the file holds "
            f"{data_bytes:,} bytes of data (truncated or corrupt)"
        )
    return tuple(declared), dtype


def read_npy(path: str | os.PathLike, shape: Sequence[int | None] | None = None) -> np.ndarray:
    """The array of the ``.npy`` file ``path``, its header checked first (:func:`check_npy_header`); never unpickles.
    Raises ``ValueError`` (the problem, without the file name) or ``OSError``."""
    check_npy_header(path, shape)
    return np.load(path, allow_pickle=False)
