"""Path checks shared by the commands that write or replace output: is this the same file, is it inside that folder,
how a finished folder takes the place of an older one without a moment where neither exists, and how a file is
written atomically with the permissions of any other new file."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from talkingface.errors import TalkingFaceError


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


def require_writable(folder: str | os.PathLike, hint: str | None = None) -> None:
    """Refuse up front a ``folder`` this process cannot write files into: the folder itself, or where it does not
    exist yet, the nearest existing folder above it (where it would be made). Raises :class:`TalkingFaceError` naming
    that folder, with ``hint`` as the next step. Checked with ``os.access``, before any work whose result would then
    be lost."""
    folder = Path(folder)
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise TalkingFaceError(existing, "is not a folder", hint=hint)
    if not os.access(existing, os.W_OK | os.X_OK):
        made = "" if existing == folder else f" (needed to make {folder})"
        raise TalkingFaceError(existing, f"folder not writable{made}", hint=hint)


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


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path`` to write the new file to; when the block ends without an
    exception it is renamed over ``path`` (readers see the old file or the new one, never half of one), else removed.

    The temporary file is created first with mode 0666 minus the umask (as ``open`` creates files), and keeps that
    mode even when the writer replaces it with a file of its own (``safetensors`` writes through a private 0600
    temporary file; so does ``tempfile.mkstemp``): the finished file has the permissions of any other new file.
    The writer may write to the path given or open it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:  # name the folder, not the hidden temporary file no one asked for
        raise type(err)(err.errno, f"cannot write {path.name} there: {err.strerror}", str(path.parent)) from None
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)  # what the umask (and a default ACL) leave of 0666
    finally:
        os.close(fd)
    try:
        yield tmp
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_output`); returns ``path``."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes (hex), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
