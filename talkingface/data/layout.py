"""The on-disk dataset layout: the one module that knows where each file lives and how it is written and read.

Under the dataset root (see docs/data.md)::

    images/<v>_<f>.jpg         RGB face crop, JPEG quality JPEG_QUALITY (square, meta.json "image_size" pixels)
    landmarks/<v>_<f>.lms      68 rows "x y" (LANDMARK_FMT), pixels of the saved frame (iBUG layout)
    audio_smooth/<v>_<f>.npy   float32 (8, 16, D), D = meta.json audio_feature.dim (AUDIO_SMOOTH_SHAPE when 29)
    data.txt                   "v frame_count", line v = video v
    meta.json                  fps, image_size, audio_feature, videos (its content: talkingface.data.meta)

and the split lists ``data_train.txt`` / ``data_test.txt`` (``<v>_<f>`` lines, frames from ``FIRST_LISTED_FRAME``)
in the split folder, by default the root's parent. Videos ``v`` are numbered from 1, frames ``f`` from 0.
``.tmp/``, ``.done/`` and ``.lock*`` are working files of the preprocessing writer, never read by training.

Every writer (preprocessing, the synthetic generator, test fixtures) and every reader (dataset, validation, data
module, latent cache builder) goes through :class:`DatasetLayout` and the split-list functions here.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from talkingface.constants import AUDIO_WINDOW, N_LANDMARKS, SMOOTH_WINDOWS
from talkingface.data.meta import DatasetMetaError, check_meta, meta_feature_dim
from talkingface.npy import read_npy
from talkingface.paths import atomic_output

IMAGES_DIR = "images"
LANDMARKS_DIR = "landmarks"
AUDIO_SMOOTH_DIR = "audio_smooth"
DATA_TXT = "data.txt"
META_JSON = "meta.json"
TRAIN_LIST = "data_train.txt"
TEST_LIST = "data_test.txt"
#: The ``meta.json`` key recording the split lists the dataset wrote: ``{"train"|"test": {"path", "sha256"}}``,
#: paths relative to the root. Two datasets in one folder would otherwise overwrite each other's lists unseen.
SPLIT_LISTS_KEY = "split_lists"
#: Working folders of the preprocessing writer inside the root (never read by training).
TMP_DIR = ".tmp"
DONE_DIR = ".done"
#: Lock file of the preprocessing writer inside the root: one run (or the shards of one run) at a time.
LOCK_FILE = ".lock"

#: JPEG quality of every saved frame (the preprocessing ``--jpeg-quality`` default).
JPEG_QUALITY = 95
#: ``numpy.savetxt`` format of one landmark coordinate.
LANDMARK_FMT = "%.3f"
#: First frame listed in split files: the reference lists start at 1 (frame 0 is stored but not listed).
FIRST_LISTED_FRAME = 1


class LayoutFileError(DatasetMetaError):
    """One file of the layout is unreadable or not in its format: ``path`` and ``problem`` kept apart."""

    def __init__(self, path: str | os.PathLike, problem: str, hint: str | None = None) -> None:
        super().__init__(str(path), problem, hint=hint)
        self.path = Path(path)


@dataclass(frozen=True)
class FrameFile:
    """One per-frame file kind: ``<folder>/<v>_<f><suffix>``."""

    folder: str
    suffix: str

    def name(self, video: int, frame: int) -> str:
        return f"{frame_name(video, frame)}{self.suffix}"


IMAGE = FrameFile(IMAGES_DIR, ".jpg")
LANDMARKS = FrameFile(LANDMARKS_DIR, ".lms")
AUDIO = FrameFile(AUDIO_SMOOTH_DIR, ".npy")
#: Every per-frame file kind: each frame ``0..n-1`` of each video has exactly one of each.
FRAME_FILES = (IMAGE, LANDMARKS, AUDIO)


def frame_name(video: int, frame: int) -> str:
    """``(v, f) -> "<v>_<f>"``, the name of a frame in file names and split lists."""
    return f"{int(video)}_{int(frame)}"


def parse_name(name: str) -> tuple[int, int]:
    """``"<v>_<f>" -> (v, f)``; raises ValueError for anything else."""
    v, sep, f = name.partition("_")
    if not sep or not v.isdigit() or not f.isdigit():
        raise ValueError(f"not a '<video>_<frame>' name: {name!r}")
    return int(v), int(f)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old or the new file, never half of one."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented, key-sorted JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """A JSON object, or None when the file is absent or not JSON (for files that may not exist yet)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


# --------------------------------------------------------------------------------------------- split lists


def default_split_dir(root: str | os.PathLike) -> Path:
    """Where split lists go by default: the dataset root's parent (``data/`` for ``data/HDTF``)."""
    return Path(root).resolve().parent


def read_split(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``<v>_<f>`` lines -> ``(videos int32, frames int32)``; raises DatasetMetaError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetMetaError(f"{path}: split list missing")
    videos, frames = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                v, fr = parse_name(line)
            except ValueError as e:
                raise DatasetMetaError(f"{path}:{lineno}: {e}") from None
            videos.append(v)
            frames.append(fr)
    return np.asarray(videos, dtype=np.int32), np.asarray(frames, dtype=np.int32)


def split_text(videos: Iterable[int], counts: Mapping[int, int] | list[int]) -> str:
    """The split list of ``videos``: frames ``FIRST_LISTED_FRAME .. n-1`` of each, ``counts`` by video number
    (a mapping, or a list where element ``v - 1`` is video ``v``'s count as in ``data.txt``)."""
    count = counts.get if isinstance(counts, Mapping) else (lambda v: counts[v - 1])
    return "".join(f"{frame_name(v, f)}\n" for v in videos for f in range(FIRST_LISTED_FRAME, count(v)))


def write_split(path: str | os.PathLike, videos: Iterable[int], counts: Mapping[int, int] | list[int]) -> None:
    """Write :func:`split_text` to ``path``."""
    atomic_write_text(path, split_text(videos, counts))


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------- the root


class DatasetLayout:
    """Paths and formats of the files under one dataset root. Cheap to build and to pickle (holds only paths).

    ``split_dir``: the folder of ``data_train.txt`` / ``data_test.txt`` (default: the root's parent).
    ``feature_dim``: the audio feature dimension D of ``audio_smooth`` files (default: ``meta.json``'s, read when
    first needed; 29 when there is no ``meta.json`` yet).
    """

    def __init__(
        self, root: str | os.PathLike, split_dir: str | os.PathLike | None = None, feature_dim: int | None = None
    ) -> None:
        self.root = Path(root)
        self.split_dir = Path(split_dir) if split_dir is not None else default_split_dir(self.root)
        self._feature_dim = feature_dim

    def __repr__(self) -> str:
        return f"DatasetLayout({str(self.root)!r})"

    # ------------------------------------------------------------------------------------ paths
    def folder(self, kind: FrameFile) -> Path:
        return self.root / kind.folder

    def path(self, kind: FrameFile, video: int, frame: int) -> Path:
        return self.root / kind.folder / kind.name(video, frame)

    def image_path(self, video: int, frame: int) -> Path:
        return self.path(IMAGE, video, frame)

    def landmarks_path(self, video: int, frame: int) -> Path:
        return self.path(LANDMARKS, video, frame)

    def audio_path(self, video: int, frame: int) -> Path:
        return self.path(AUDIO, video, frame)

    @property
    def data_txt_path(self) -> Path:
        return self.root / DATA_TXT

    @property
    def meta_path(self) -> Path:
        return self.root / META_JSON

    @property
    def train_list(self) -> Path:
        return self.split_dir / TRAIN_LIST

    @property
    def test_list(self) -> Path:
        return self.split_dir / TEST_LIST

    @property
    def split_lists(self) -> dict[str, Path]:
        return {"train": self.train_list, "test": self.test_list}

    def _relative(self, path: Path) -> str:
        return os.path.relpath(path.resolve(), self.root.resolve())

    def split_record(self, texts: Mapping[str, str]) -> dict[str, dict[str, str]]:
        """The ``meta.json`` record (:data:`SPLIT_LISTS_KEY`) of split lists written with ``texts`` by key."""
        return {k: {"path": self._relative(self.split_lists[k]), "sha256": text_sha256(t)} for k, t in texts.items()}

    def foreign_split_list(self, meta: Mapping[str, Any], key: str, new_text: str | None = None) -> str | None:
        """Why the split list ``key`` ("train"/"test") on disk is not the one this dataset wrote, per ``meta``'s
        record; None when it is (or equals ``new_text``), when it is absent, or when ``meta`` records nothing (a
        dataset from before the record, or from another writer)."""
        path = self.split_lists[key]
        records = meta.get(SPLIT_LISTS_KEY)
        if not path.is_file() or (records is None and meta):
            return None
        have = hashlib.sha256(path.read_bytes()).hexdigest()
        entry = (records or {}).get(key)
        if isinstance(entry, dict) and entry.get("path") == self._relative(path) and entry.get("sha256") == have:
            return None
        if new_text is not None and have == text_sha256(new_text):
            return None
        if isinstance(entry, dict) and entry.get("path") != self._relative(path):
            return f"not the split list this dataset wrote (meta.json records it at {entry.get('path')})"
        return (
            f"not the split list this dataset wrote ({META_JSON} of {self.root} records another checksum or none): "
            "another dataset's in the same folder, or edited"
        )

    def make_folders(self) -> None:
        for kind in FRAME_FILES:
            self.folder(kind).mkdir(parents=True, exist_ok=True)

    def video_files(self, video: int) -> Iterator[Path]:
        """The per-frame files of ``video`` that exist (all kinds)."""
        for kind in FRAME_FILES:
            if self.folder(kind).is_dir():
                yield from self.folder(kind).glob(f"{int(video)}_*{kind.suffix}")

    # ------------------------------------------------------------------------------------ frames
    def write_frame(self, video: int, frame: int, rgb: np.ndarray, quality: int = JPEG_QUALITY) -> Path:
        """Save an RGB uint8 ``(S, S, 3)`` frame as JPEG."""
        import cv2

        path = self.image_path(video, frame)
        bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)]):
            raise OSError(f"cannot write {path}")
        return path

    def read_frame(self, video: int, frame: int) -> np.ndarray:
        """The saved frame as RGB uint8 ``(S, S, 3)`` (decoded by PIL, as the training loader decodes it)."""
        return self.read_frame_resized(video, frame, None)[0]

    def read_frame_resized(self, video: int, frame: int, size: int | None) -> tuple[np.ndarray, int]:
        """The frame as RGB uint8 resized to ``size`` with PIL bicubic (as the reference loader), and its saved
        width. ``size=None`` keeps the saved size."""
        from PIL import Image, UnidentifiedImageError

        path = self.image_path(video, frame)
        try:
            with Image.open(path) as image:
                image = image.convert("RGB") if image.mode != "RGB" else image
                width = image.size[0]  # the reference calls this "h": PIL's size is (w, h); frames are square
                if size is not None:
                    image = image.resize((size, size), resample=Image.BICUBIC)
                return np.asarray(image, dtype=np.uint8), width
        except FileNotFoundError:
            raise LayoutFileError(path, "missing") from None
        except (UnidentifiedImageError, OSError) as e:
            raise LayoutFileError(path, f"unreadable image ({e})") from None

    # ------------------------------------------------------------------------------------ landmarks
    def write_landmarks(self, video: int, frame: int, landmarks: np.ndarray) -> Path:
        """68 rows ``"x y"`` in pixels of the saved frame."""
        landmarks = np.asarray(landmarks)
        if landmarks.shape != (N_LANDMARKS, 2):
            raise ValueError(f"landmarks of shape {landmarks.shape}, expected ({N_LANDMARKS}, 2)")
        path = self.landmarks_path(video, frame)
        np.savetxt(path, landmarks, fmt=LANDMARK_FMT)
        return path

    def read_landmarks(self, video: int, frame: int) -> np.ndarray:
        """float32 ``(68, 2)`` in saved-frame pixels."""
        path = self.landmarks_path(video, frame)
        try:
            landmarks = np.loadtxt(path, dtype=np.float32)
        except (OSError, ValueError) as e:
            raise LayoutFileError(path, f"unreadable ({e})") from None
        if landmarks.shape != (N_LANDMARKS, 2):
            raise LayoutFileError(path, f"expected {N_LANDMARKS} rows 'x y', got shape {landmarks.shape}")
        if not np.isfinite(landmarks).all():
            raise LayoutFileError(path, "non-finite landmark")
        return landmarks

    # ------------------------------------------------------------------------------------ audio windows
    @property
    def feature_dim(self) -> int:
        """D of the ``(8, 16, D)`` audio files: the constructor's, else ``meta.json``'s, else 29."""
        if self._feature_dim is None:
            meta = read_json(self.meta_path) if self.meta_path.is_file() else None
            self._feature_dim = meta_feature_dim(meta or {})
        return self._feature_dim

    @property
    def audio_shape(self) -> tuple[int, int, int]:
        """Shape of one ``audio_smooth`` file: ``(SMOOTH_WINDOWS, AUDIO_WINDOW, feature_dim)``."""
        return (SMOOTH_WINDOWS, AUDIO_WINDOW, self.feature_dim)

    def write_audio(self, video: int, frame: int, windows: np.ndarray) -> Path:
        """The frame's smoothed audio windows, float32 ``(8, 16, D)`` (D: the backend's, recorded in meta.json)."""
        windows = np.asarray(windows)
        if windows.ndim != 3 or windows.shape[:2] != (SMOOTH_WINDOWS, AUDIO_WINDOW) or windows.dtype != np.float32:
            raise ValueError(
                f"audio windows {windows.dtype} {windows.shape}, expected float32 ({SMOOTH_WINDOWS}, {AUDIO_WINDOW}, D)"
            )
        path = self.audio_path(video, frame)
        np.save(path, windows)
        return path

    def read_audio(self, video: int, frame: int) -> np.ndarray:
        """float32 :attr:`audio_shape`, all finite."""
        path = self.audio_path(video, frame)
        try:
            windows = read_npy(path)  # the header is checked first: a huge declared shape takes no memory
        except (OSError, ValueError, EOFError) as e:
            raise LayoutFileError(path, f"unreadable ({e})") from None
        if windows.shape != self.audio_shape or windows.dtype != np.float32:
            raise LayoutFileError(path, f"expected float32 {self.audio_shape}, got {windows.dtype} {windows.shape}")
        if not np.isfinite(windows).all():
            raise LayoutFileError(path, f"{int((~np.isfinite(windows)).sum())} non-finite value(s) (NaN or inf)")
        return windows

    # ------------------------------------------------------------------------------------ data.txt
    def write_data_txt(self, counts: Iterable[int]) -> None:
        """Line ``v`` is ``"v n"``: video ``v`` has frames ``0..n-1`` (``n = 0`` for a failed video)."""
        atomic_write_text(self.data_txt_path, "".join(f"{v} {int(n)}\n" for v, n in enumerate(counts, 1)))

    def read_data_txt(self) -> list[int]:
        """Frame counts per video: element ``v - 1`` is video ``v``'s count (as the reference reads it).

        Raises:
            DatasetMetaError: when the file is missing, a line is malformed, or lines are not ``1..K`` in order.
        """
        path = self.data_txt_path
        if not path.is_file():
            raise DatasetMetaError(f"{path}: missing")
        counts: list[int] = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
                raise DatasetMetaError(f"{path}:{lineno}: expected 'video frame_count', got {line!r}")
            v, n = int(parts[0]), int(parts[1])
            if v != len(counts) + 1:
                raise DatasetMetaError(
                    f"{path}:{lineno}: video {v} on line {len(counts) + 1}; the loader indexes data.txt by "
                    "line (line v holds video v), so videos must be 1..K in order"
                )
            counts.append(n)
        return counts

    # ------------------------------------------------------------------------------------ meta.json
    def write_meta(self, meta: Mapping[str, Any]) -> None:
        write_json(self.meta_path, dict(meta))

    def read_meta(self) -> dict[str, Any]:
        """``meta.json``, checked (:func:`talkingface.data.meta.check_meta`).

        Raises:
            DatasetMetaError: naming the file, when it is absent, not JSON, or lacks the required keys.
        """
        path = self.meta_path
        if not path.is_file():
            raise DatasetMetaError(
                f"{path}: missing. Build the dataset with `python -m talkingface.preprocess run ... --out {self.root}`."
            )
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DatasetMetaError(f"{path}: unreadable ({e})") from e
        check_meta(meta, path)
        return meta

    def read_meta_if_any(self) -> dict[str, Any]:
        """``meta.json`` as far as it exists, unchecked (``{}`` before the first write): for the writer."""
        return read_json(self.meta_path) or {}
