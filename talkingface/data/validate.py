"""Check a preprocessed dataset: every problem is reported with the file it concerns."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from talkingface.data.constants import (
    AUDIO_SMOOTH_DIR,
    AUDIO_SMOOTH_SHAPE,
    IMAGES_DIR,
    LANDMARKS_DIR,
    N_LANDMARKS,
    TEST_LIST,
    TMP_DIR,
    TRAIN_LIST,
)
from talkingface.data.meta import (
    DatasetMetaError,
    check_feature_kind,
    default_split_dir,
    parse_name,
    read_data_txt,
    read_dataset_meta,
)

_FOLDERS = ((IMAGES_DIR, ".jpg"), (LANDMARKS_DIR, ".lms"), (AUDIO_SMOOTH_DIR, ".npy"))


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _list_names(folder: Path, ext: str, problems: list[Problem]) -> set[str]:
    names: set[str] = set()
    if not folder.is_dir():
        problems.append(Problem(str(folder), "folder missing"))
        return names
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, dot, suffix = entry.name.rpartition(".")
            if dot and "." + suffix == ext:
                names.add(stem)
            else:
                problems.append(Problem(entry.path, f"unexpected file (expected <v>_<f>{ext})"))
    return names


def _check_file(path: Path, ext: str, image_size: int | None, check_images: bool) -> str | None:
    try:
        if ext == ".lms":
            lms = np.loadtxt(path, dtype=np.float32)
            if lms.shape != (N_LANDMARKS, 2):
                return f"expected {N_LANDMARKS} rows 'x y', got shape {lms.shape}"
            if not np.isfinite(lms).all():
                return "non-finite landmark"
        elif ext == ".npy":
            arr = np.load(path)
            if arr.shape != AUDIO_SMOOTH_SHAPE or arr.dtype != np.float32:
                return f"expected float32 {AUDIO_SMOOTH_SHAPE}, got {arr.dtype} {arr.shape}"
        elif check_images:
            import cv2

            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                return "unreadable image"
            if image_size and image.shape[:2] != (image_size, image_size):
                return f"image is {image.shape[1]}x{image.shape[0]}, meta.json says {image_size}"
    except (OSError, ValueError) as e:
        return f"unreadable ({e})"
    return None


def validate_dataset(
    root: str | os.PathLike,
    split_dir: str | os.PathLike | None = None,
    check_images: bool = True,
    expected_audio_feature: str | None = None,
    progress: bool = True,
) -> list[Problem]:
    """All problems found in the dataset at ``root`` (empty list: valid).

    Checks meta.json (and the feature kind when given), data.txt, that every frame ``0..n-1`` of every video has
    its image, landmarks and audio_smooth file with the right shape, that no extra files exist, that images
    decode at the recorded size, and that the split lists name existing frames.
    """
    root = Path(root)
    problems: list[Problem] = []
    image_size = None
    try:
        meta = read_dataset_meta(root)
        image_size = int(meta["image_size"])
        check_feature_kind(meta, expected_audio_feature)
    except DatasetMetaError as e:
        problems.append(Problem(str(root / "meta.json"), str(e)))
        meta = None
    try:
        counts = read_data_txt(root)
    except DatasetMetaError as e:
        problems.append(Problem(str(root / "data.txt"), str(e)))
        counts = []
    if meta is not None:
        for v, entry in (meta.get("videos") or {}).items():
            if isinstance(entry, dict) and entry.get("status") == "done" and str(v).isdigit():
                n = int(v)
                if n > len(counts) or counts[n - 1] != entry.get("frames"):
                    have = counts[n - 1] if n <= len(counts) else "nothing"
                    problems.append(
                        Problem(
                            str(root / "data.txt"),
                            f"video {n}: meta.json says {entry.get('frames')} frames, data.txt {have}",
                        )
                    )
    expected = {f"{v}_{f}" for v, n in enumerate(counts, 1) for f in range(n)}
    tmp = root / TMP_DIR
    if tmp.is_dir() and any(tmp.iterdir()):
        problems.append(Problem(str(tmp), "unfinished video(s) from an interrupted run; rerun `run` to finish them"))
    for folder, ext in _FOLDERS:
        present = _list_names(root / folder, ext, problems)
        for name in sorted(expected - present, key=_sort_key):
            problems.append(Problem(str(root / folder / f"{name}{ext}"), "missing"))
        for name in sorted(present - expected, key=_sort_key):
            problems.append(Problem(str(root / folder / f"{name}{ext}"), "extra file: not a frame listed in data.txt"))
        check = sorted(present & expected, key=_sort_key)
        for name in tqdm(check, desc=f"check {folder}", unit="file", disable=not progress, leave=False):
            path = root / folder / f"{name}{ext}"
            message = _check_file(path, ext, image_size, check_images)
            if message:
                problems.append(Problem(str(path), message))
    split_dir = Path(split_dir) if split_dir else default_split_dir(root)
    for list_name in (TRAIN_LIST, TEST_LIST):
        path = split_dir / list_name
        if not path.is_file():
            problems.append(Problem(str(path), "split list missing"))
            continue
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if line and line not in expected:
                    reason = "not a frame of the dataset"
                    try:
                        parse_name(line)
                    except ValueError:
                        reason = "not a <video>_<frame> name"
                    problems.append(Problem(f"{path}:{lineno}", f"{line!r}: {reason}"))
    return problems


def _sort_key(name: str) -> tuple[int, int] | tuple[float, str]:
    try:
        return parse_name(name)
    except ValueError:
        return (float("inf"), name)
