"""Check a preprocessed dataset: every problem is reported with the file it concerns."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from talkingface.data.layout import (
    AUDIO,
    FRAME_FILES,
    IMAGE,
    LANDMARKS,
    TMP_DIR,
    DatasetLayout,
    FrameFile,
    LayoutFileError,
    parse_name,
)
from talkingface.data.meta import DatasetMetaError, check_feature_kind
from talkingface.media.features import BACKEND_KINDS

#: How far beyond the saved image a landmark may lie, as a fraction of the image side. The crop is 1.8x the
#: landmarks' extent (a margin of about a fifth of the side around the face), so a landmark outside the image is
#: already unusual; one beyond this margin is not a point of the face in this frame.
LANDMARK_MARGIN = 0.1
#: Largest magnitude of an audio feature value. No feature kind comes near it: log-mel bands are normalised per
#: utterance (z-scores: |x| <= sqrt(frames), under 1e4 for any video shorter than 500 hours at 50 Hz, and under 10
#: in practice), DeepSpeech outputs are logits (tens), whisper's are encoder states after its final layer norm
#: (tens), wav2vec2's are posteriors in [0, 1]. A value beyond it is a broken file or a broken feature extractor.
MAX_ABS_FEATURE = 1e4
#: Feature kinds whose values are probabilities (character posteriors), with the rounding they may carry.
POSTERIOR_KINDS = (BACKEND_KINDS["wav2vec2"],)
POSTERIOR_TOLERANCE = 1e-3


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


def landmark_range_problem(landmarks: np.ndarray, image_size: int) -> str | None:
    """What is wrong with ``(68, 2)`` saved-frame landmarks of an ``image_size`` square image: points farther than
    :data:`LANDMARK_MARGIN` of the side beyond its edges (None: nothing)."""
    margin = LANDMARK_MARGIN * image_size
    outside = ((landmarks < -margin) | (landmarks > image_size - 1 + margin)).any(axis=1)
    if not outside.any():
        return None
    first = int(np.argmax(outside))
    x, y = (float(c) for c in landmarks[first])
    count = f"{int(outside.sum())} landmarks lie" if outside.sum() > 1 else "a landmark lies"
    return (
        f"{count} outside the {image_size}x{image_size} image (more than {margin:g} px beyond its edge), the first: "
        f"landmark {first} at ({x:g}, {y:g})"
    )


def feature_range_problem(windows: np.ndarray, feature_kind: str | None) -> str | None:
    """What is wrong with the (finite) audio windows of one frame: a value beyond :data:`MAX_ABS_FEATURE`, or, for
    posterior features, outside [0, 1] (None: nothing)."""
    if feature_kind in POSTERIOR_KINDS:
        lo, hi = -POSTERIOR_TOLERANCE, 1.0 + POSTERIOR_TOLERANCE
        bound = f"outside [0, 1] ({feature_kind} features are character posteriors)"
    else:
        lo, hi = -MAX_ABS_FEATURE, MAX_ABS_FEATURE
        bound = f"with |x| > {MAX_ABS_FEATURE:g} (no {feature_kind or 'audio'} feature comes near it)"
    bad = (windows < lo) | (windows > hi)
    if not bad.any():
        return None
    index = np.unravel_index(int(np.argmax(bad)), windows.shape)
    count = f"{int(bad.sum())} values" if bad.sum() > 1 else "1 value"
    where = ", ".join(str(int(i)) for i in index)
    return f"{count} {bound}, the first: {float(windows[index]):g} at [{where}]"


def _check_file(
    layout: DatasetLayout,
    kind: FrameFile,
    v: int,
    f: int,
    image_size: int | None,
    feature_kind: str | None = None,
) -> str | None:
    """What is wrong with one per-frame file, read as the loader reads it, then range-checked (None: nothing)."""
    try:
        if kind is LANDMARKS:
            landmarks = layout.read_landmarks(v, f)
            if image_size:
                return landmark_range_problem(landmarks, image_size)
        elif kind is AUDIO:
            return feature_range_problem(layout.read_audio(v, f), feature_kind)
        elif kind is IMAGE:
            image = layout.read_frame(v, f)
            if image_size and image.shape[:2] != (image_size, image_size):
                return f"image is {image.shape[1]}x{image.shape[0]}, meta.json says {image_size}"
    except LayoutFileError as e:
        return e.problem
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
    decode at the recorded size, that landmarks lie on the image (:data:`LANDMARK_MARGIN`) and audio features
    within the range of their kind (:data:`MAX_ABS_FEATURE`, posteriors in [0, 1]), and that the split lists
    name existing frames and are the ones the dataset wrote (when ``meta.json`` records them).
    """
    layout = DatasetLayout(root, split_dir)
    problems: list[Problem] = []
    image_size = None
    feature_kind = None
    try:
        meta = layout.read_meta()
        image_size = int(meta["image_size"])
        feature_kind = str(meta["audio_feature"]["kind"])
        check_feature_kind(meta, expected_audio_feature)
    except DatasetMetaError as e:
        problems.append(Problem(str(layout.meta_path), str(e)))
        meta = None
    try:
        counts = layout.read_data_txt()
    except DatasetMetaError as e:
        problems.append(Problem(str(layout.data_txt_path), str(e)))
        counts = []
    if meta is not None:
        for v, entry in (meta.get("videos") or {}).items():
            if isinstance(entry, dict) and entry.get("status") == "done" and str(v).isdigit():
                n = int(v)
                if n > len(counts) or counts[n - 1] != entry.get("frames"):
                    have = counts[n - 1] if n <= len(counts) else "nothing"
                    problems.append(
                        Problem(
                            str(layout.data_txt_path),
                            f"video {n}: meta.json says {entry.get('frames')} frames, data.txt {have}",
                        )
                    )
    expected = {f"{v}_{f}" for v, n in enumerate(counts, 1) for f in range(n)}
    tmp = layout.root / TMP_DIR
    if tmp.is_dir() and any(tmp.iterdir()):
        problems.append(Problem(str(tmp), "unfinished video(s) from an interrupted run; rerun `run` to finish them"))
    for kind in FRAME_FILES:
        folder = layout.folder(kind)
        present = _list_names(folder, kind.suffix, problems)
        for name in sorted(expected - present, key=_sort_key):
            problems.append(Problem(str(folder / f"{name}{kind.suffix}"), "missing"))
        for name in sorted(present - expected, key=_sort_key):
            problems.append(Problem(str(folder / f"{name}{kind.suffix}"), "extra file: not a frame listed in data.txt"))
        if kind is IMAGE and not check_images:
            continue
        check = sorted(present & expected, key=_sort_key)
        for name in tqdm(check, desc=f"check {kind.folder}", unit="file", disable=not progress, leave=False):
            v, f = parse_name(name)
            message = _check_file(layout, kind, v, f, image_size, feature_kind)
            if message:
                problems.append(Problem(str(layout.path(kind, v, f)), message))
    for key, path in layout.split_lists.items():
        if not path.is_file():
            problems.append(Problem(str(path), "split list missing"))
            continue
        foreign = layout.foreign_split_list(meta, key) if meta is not None else None
        if foreign:
            problems.append(Problem(str(path), foreign))
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
