"""The synthetic generator's output folder, and when it may be replaced.

``OUT/`` holds ``synthetic.json`` (written first: the generator and its settings), ``videos/`` (``synthetic_<v>.mp4``
and sidecars), ``dataset/`` (the training layout) and the split lists ``data_train.txt`` / ``data_test.txt``. A
non-empty ``OUT`` is replaced (with ``--overwrite``) only when it holds nothing but these: the manifest, or for sets
written before it existed, ``dataset/meta.json`` with the generator's ``source`` or only ``synthetic_*`` videos.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from talkingface.data.layout import (
    AUDIO_SMOOTH_DIR,
    DATA_TXT,
    IMAGES_DIR,
    LANDMARKS_DIR,
    META_JSON,
    TEST_LIST,
    TRAIN_LIST,
    read_json,
    write_json,
)
from talkingface.synthetic.generate import GENERATOR, MOUTH_DIR

DATASET_DIR = "dataset"
VIDEOS_DIR = "videos"
MANIFEST_FILE = "synthetic.json"

_OUT_ENTRIES = frozenset({MANIFEST_FILE, VIDEOS_DIR, DATASET_DIR, TRAIN_LIST, TEST_LIST})
_DATASET_ENTRIES = frozenset({IMAGES_DIR, LANDMARKS_DIR, AUDIO_SMOOTH_DIR, MOUTH_DIR, DATA_TXT, META_JSON})
_VIDEO_FILE = re.compile(r"synthetic_\d+(\.mp4|\.landmarks\.npy|\.mouth\.npy)")


def write_manifest(out: Path, settings: dict[str, Any]) -> None:
    """``OUT/synthetic.json``: the generator and its settings (marks ``OUT`` as this generator's output)."""
    write_json(out / MANIFEST_FILE, {"generator": GENERATOR, **settings})


def is_empty(out: Path) -> bool:
    """``out`` does not exist, or is an empty folder."""
    return not os.path.lexists(out) or (out.is_dir() and not out.is_symlink() and not any(out.iterdir()))


def replace_problem(out: Path) -> str | None:
    """None when ``out`` (existing, not empty) holds only a synthetic set this generator wrote, so replacing it loses
    nothing else; else why not."""
    if not out.is_dir():
        return "it is not a folder"
    names = {p.name for p in out.iterdir()}
    foreign = sorted(names - _OUT_ENTRIES)
    if foreign:
        return f"it holds {foreign[0]!r}, which this generator does not write"
    dataset, videos = out / DATASET_DIR, out / VIDEOS_DIR
    for folder, allowed in ((dataset, _DATASET_ENTRIES.__contains__), (videos, _VIDEO_FILE.fullmatch)):
        if not os.path.lexists(folder):
            continue
        if folder.is_symlink() or not folder.is_dir():
            return f"{folder.name} is not a folder"
        foreign = sorted(p.name for p in folder.iterdir() if not allowed(p.name))
        if foreign:
            return f"{folder.name}/ holds {foreign[0]!r}, which this generator does not write"
    manifest = read_json(out / MANIFEST_FILE) or {}
    meta = read_json(dataset / META_JSON) or {}
    if manifest.get("generator") == GENERATOR or meta.get("source") == GENERATOR:
        return None
    if MANIFEST_FILE not in names and not dataset.exists() and videos.is_dir() and any(videos.iterdir()):
        return None  # videos only, written before the manifest existed
    return f"no {MANIFEST_FILE} of this generator"
