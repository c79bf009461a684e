"""Shared pytest setup: CPU only, seeded, repository root importable."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


def make_read_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 555 ``folder``; where that does not stop writes (running as root), make ``os.access`` say so for it,
    which is what the commands' up-front writability checks ask. Restore the mode with ``folder.chmod(0o755)``."""
    import os

    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        real_access = os.access

        def access(path: object, mode: int, **kw: object) -> bool:
            if Path(str(path)).resolve() == folder.resolve() and mode & os.W_OK:
                return False
            return real_access(path, mode, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "access", access)
