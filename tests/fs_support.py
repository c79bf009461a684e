"""File-system helpers for the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def make_read_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 555 ``folder``; where that does not stop writes (running as root), make ``os.access`` say so for it,
    which is what the commands' up-front writability checks ask. Restore the mode with ``folder.chmod(0o755)``."""
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        real_access = os.access

        def access(path: object, mode: int, **kw: object) -> bool:
            if Path(str(path)).resolve() == folder.resolve() and mode & os.W_OK:
                return False
            return real_access(path, mode, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "access", access)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
