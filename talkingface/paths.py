"""Path checks shared by the commands that write or replace output: is this the same file, is it inside that folder,
and how a finished folder takes the place of an older one without a moment where neither exists."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """``a`` and ``b`` name one file or folder: other spellings (``..``), symbolic links, hard links (same device
    and inode)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """``path`` is ``folder`` or lies inside it, after resolving symbolic links and ``..`` in both."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def replace_folder(new: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Move the finished folder ``new`` to ``dest`` (same file system). An existing ``dest`` is first moved aside and
    deleted only once ``new`` is in its place; if that move fails, it is put back. The caller decides that ``dest``
    may be replaced."""
    new, dest = Path(new), Path(dest)
    old = dest.with_name(f".{dest.name}.replaced-{os.getpid()}")
    had_dest = os.path.lexists(dest)
    if had_dest:
        os.replace(dest, old)
    try:
        os.replace(new, dest)
    except BaseException:
        if had_dest:
            os.replace(old, dest)
        raise
    if had_dest:
        shutil.rmtree(old, ignore_errors=True)
