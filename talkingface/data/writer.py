"""Build the DiffTalk dataset layout from videos: numbering, atomic per-video writes, resume, shards, workers.

Every file goes through :class:`talkingface.data.layout.DatasetLayout` (see docs/data.md); split lists in
``split_dir``. Videos ``v`` are numbered from 1, frames ``f`` from 0; working files live in ``out/.tmp`` (a
per-video layout, moved into place when the video is done) and ``out/.done`` (one marker per finished video).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import hashlib
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from talkingface.constants import DEFAULT_IMAGE_SIZE, FEATURE_DIM, FPS, REFERENCE_MIN_DISTANCE, SAMPLE_RATE
from talkingface.data.layout import (
    DONE_DIR,
    FIRST_LISTED_FRAME,
    FRAME_FILES,
    JPEG_QUALITY,
    LOCK_FILE,
    SPLIT_LISTS_KEY,
    TMP_DIR,
    DatasetLayout,
    atomic_write_text,
    default_split_dir,
    read_json,
    split_text,
    write_json,
)
from talkingface.data.meta import audio_feature_spec, dataset_meta
from talkingface.errors import DISK_FULL
from talkingface.media.crop import CropConfig
from talkingface.media.decode import VIDEO_EXTENSIONS
from talkingface.media.errors import PreprocessError
from talkingface.media.extract import DEFAULT_MAX_AV_GAP_S, DEFAULT_MAX_MISSING, analyse_video, iter_crops
from talkingface.media.face_choice import LARGEST, FaceChoice
from talkingface.media.features import BACKEND_KINDS, AudioFeatureBackend, DeepSpeechNpyBackend, make_backend
from talkingface.media.landmarks import shared_detector
from talkingface.media.windows import smooth_window

log = logging.getLogger(__name__)

DEFAULT_TEST_RATIO = 0.1
_MARKER_FIELDS = ("source", "path", "audio", "frames", "missed_faces", "audio_seconds", "size", "mtime_ns")
#: Fewest frames a video needs to contribute one training item (the split lists start at FIRST_LISTED_FRAME).
MIN_FRAMES = FIRST_LISTED_FRAME + 1
#: Below this many frames some frames have no reference frame REFERENCE_MIN_DISTANCE away (the dataset then
#: uses the farthest one): such videos are kept, with a warning, and counted in the summary.
SHORT_FRAMES = REFERENCE_MIN_DISTANCE + FIRST_LISTED_FRAME + 1


@dataclass(frozen=True)
class BuildOptions:
    """Everything that determines the content of one video's files."""

    fps: float = FPS
    size: int = DEFAULT_IMAGE_SIZE
    audio_features: str = "mel"
    wav2vec2_model: str | None = None
    whisper_model: str | None = None
    deepspeech_npy: str | None = None
    device: str = "cpu"
    crop: CropConfig = field(default_factory=CropConfig)
    max_missing: float = DEFAULT_MAX_MISSING
    max_av_gap_s: float = DEFAULT_MAX_AV_GAP_S
    allow_silent: bool = False
    jpeg_quality: int = JPEG_QUALITY
    upsample: int = 0
    face: FaceChoice = LARGEST  # which face of each video (--face), tracked across its frames

    @property
    def kind(self) -> str:
        """The feature kind recorded in ``meta.json`` (whisper's names the model: its backend is loaded)."""
        if self.audio_features not in BACKEND_KINDS:
            raise PreprocessError("--audio-features", f"unknown backend {self.audio_features!r}")
        if self.audio_features == "whisper":
            return _backend(self).kind
        return BACKEND_KINDS[self.audio_features]

    def settings(self) -> dict[str, Any]:
        """The dataset-wide settings recorded in ``meta.json`` (a dataset never mixes two of them)."""
        fps = int(self.fps) if float(self.fps).is_integer() else float(self.fps)
        dim = _backend(self).dim if self.audio_features == "whisper" else FEATURE_DIM
        return {"fps": fps, "image_size": int(self.size), "audio_feature": audio_feature_spec(self.kind, dim)}


@dataclass(frozen=True)
class SplitOptions:
    """How to split videos into train and test lists."""

    split_dir: Path | None = None
    test_ratio: float = DEFAULT_TEST_RATIO
    seed: int = 0
    test_videos: tuple[str, ...] | None = None
    train_videos: tuple[str, ...] | None = None


@dataclass
class VideoJob:
    number: int
    video: Path
    audio: Path | None = None


@dataclass
class VideoResult:
    number: int
    source: str
    status: str  # "done" | "skipped" | "failed"
    frames: int = 0
    missed_faces: int = 0
    audio_seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    short: bool = False  # fewer than SHORT_FRAMES frames


@dataclass
class BuildSummary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    short: int = 0  # written videos shorter than the reference distance
    frames: int = 0
    missed_faces: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- inputs


def find_videos(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and directories (videos directly inside, sorted) into a list of video files."""
    videos: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise PreprocessError(path, f"directory contains no videos ({', '.join(VIDEO_EXTENSIONS)})")
            videos.extend(found)
        elif path.is_file():
            videos.append(path)
        else:
            raise PreprocessError(path, "no such file or directory")
    names: dict[str, Path] = {}
    for v in videos:
        if v.name in names and names[v.name].resolve() != v.resolve():
            raise PreprocessError(v, f"same file name as {names[v.name]}; video numbers are keyed by file name")
        names[v.name] = v
    return list(dict.fromkeys(videos))


def audio_for(video: Path, audio: Path | None, n_videos: int) -> Path | None:
    """Separate audio for ``video``: a file (single video) or ``<dir>/<stem>.<any audio ext>``."""
    if audio is None:
        return None
    if audio.is_file():
        if n_videos > 1:
            raise PreprocessError(audio, "--audio FILE works with one video; give a directory of <stem>.wav files")
        return audio
    if audio.is_dir():
        matches = sorted(p for p in audio.iterdir() if p.stem == video.stem and p.is_file())
        if not matches:
            raise PreprocessError(video, f"no audio file named {video.stem}.* in {audio}")
        return matches[0]
    raise PreprocessError(audio, "no such file or directory")


# --------------------------------------------------------------------------------------------- bookkeeping


def read_done_markers(out: Path) -> dict[int, dict[str, Any]]:
    """Completed videos: ``{number: marker}`` from ``out/.done/<v>.json``."""
    done: dict[int, dict[str, Any]] = {}
    folder = out / DONE_DIR
    if folder.is_dir():
        for path in folder.glob("*.json"):
            if path.stem.isdigit() and (marker := read_json(path)) is not None:
                done[int(path.stem)] = marker
    return done


def check_settings(out: Path, options: BuildOptions) -> None:
    """Refuse to add videos with other settings (feature kind, size, fps) to an existing dataset."""
    layout = DatasetLayout(out)
    meta = layout.read_meta_if_any()
    sources = [(layout.meta_path, meta)] if meta else []
    sources += [(out / DONE_DIR / f"{v}.json", m) for v, m in sorted(read_done_markers(out).items())[:1]]
    wanted = options.settings()
    for path, existing in sources:
        for key, value in wanted.items():
            have = existing.get(key)
            if key == "audio_feature" and isinstance(have, dict):
                have = {k: have.get(k) for k in value}
            if have is not None and have != value:
                raise PreprocessError(
                    path, f"dataset was built with {key}={have!r}, this run asks for {value!r}; use another --out"
                )


def assign_numbers(out: Path, videos: Sequence[Path]) -> dict[Path, int]:
    """Stable 1-based video numbers keyed by file name: known names keep theirs, new ones follow in input order."""
    known: dict[str, int] = {}
    meta = DatasetLayout(out).read_meta_if_any()
    for v, entry in (meta.get("videos") or {}).items():
        if isinstance(entry, dict) and entry.get("source") and str(v).isdigit():
            known[entry["source"]] = int(v)
    for v, marker in read_done_markers(out).items():
        if marker.get("source"):
            known.setdefault(marker["source"], v)
    next_number = max(known.values(), default=0) + 1
    numbers: dict[Path, int] = {}
    for video in videos:
        if video.name not in known:
            known[video.name] = next_number
            next_number += 1
        numbers[video] = known[video.name]
    return numbers


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` (0-based i) -> ``(i, n)``."""
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise PreprocessError("--shard", f"expected i/n such as 0/4, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise PreprocessError("--shard", f"need 0 <= i < n, got {text!r}")
    return i, n


def check_writable(out: Path, split_dir: Path | None = None) -> None:
    """Refuse up front (before any video is processed) a ``--out`` or split folder this process cannot write:
    the folder itself, or the nearest existing folder above it, and the dataset's existing sub-folders."""
    split_dir = split_dir if split_dir is not None else default_split_dir(out)
    layout = DatasetLayout(out)
    folders = [out, split_dir, out / DONE_DIR, out / TMP_DIR, *(layout.folder(kind) for kind in FRAME_FILES)]
    for folder in dict.fromkeys(folders):
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing != folder and folder not in (out, split_dir):
            continue  # a sub-folder that does not exist yet: checked through --out
        if not existing.is_dir():
            raise PreprocessError(folder, f"{existing} is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            where = "" if existing == folder else f" (its nearest existing folder {existing})"
            flag = "--split-dir" if folder == split_dir and folder != out else "--out"
            raise PreprocessError(folder, f"not writable{where}; give another {flag} or fix its permissions")


@contextlib.contextmanager
def run_lock(out: Path, shard_i: int = 0, shard_n: int = 1) -> Iterator[None]:
    """Hold the lock of ``out`` for one run (raises PreprocessError naming the lock file at once when another run
    holds it): exclusive for an unsharded run or ``finalize``; for shard ``i/n``, shared with the other shards and
    exclusive for that shard. Concurrent runs would delete each other's ``.tmp/<v>``. ``fcntl.flock``: released
    when the process ends, however it ends."""
    out.mkdir(parents=True, exist_ok=True)
    wanted = [(out / LOCK_FILE, fcntl.LOCK_EX if shard_n == 1 else fcntl.LOCK_SH)]
    if shard_n > 1:
        wanted.append((out / f"{LOCK_FILE}.shard-{shard_i}-of-{shard_n}", fcntl.LOCK_EX))
    held: list[int] = []
    try:
        for path, mode in wanted:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            held.append(fd)
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PreprocessError(
                    path, "another run on this --out holds this lock; wait for it to end (or give another --out)"
                ) from None
        yield
    finally:
        for fd in reversed(held):
            os.close(fd)


@contextlib.contextmanager
def _finalize_lock(out: Path) -> Iterator[None]:
    """Serialise the index writes (meta.json, data.txt, split lists) of shards running side by side (blocking)."""
    fd = os.open(out / f"{LOCK_FILE}.finalize", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------- one video


_BACKENDS: dict[tuple, AudioFeatureBackend] = {}


def _backend(options: BuildOptions) -> AudioFeatureBackend:
    o = options
    key = (o.audio_features, o.wav2vec2_model, o.whisper_model, o.deepspeech_npy, o.device)
    if key not in _BACKENDS:
        _BACKENDS[key] = make_backend(
            options.audio_features,
            {
                "wav2vec2_model": options.wav2vec2_model,
                "whisper_model": options.whisper_model,
                "deepspeech_npy": options.deepspeech_npy,
                "device": options.device,
            },
        )
    return _BACKENDS[key]


def _remove_video_files(out: Path, number: int) -> None:
    """Delete files of video ``number`` left in the final folders by a move that was interrupted."""
    for path in list(DatasetLayout(out).video_files(number)):
        path.unlink(missing_ok=True)


def _write_frames(job: VideoJob, tmp: Path, options: BuildOptions, progress: bool) -> VideoResult:
    backend = _backend(options)
    precomputed = backend.load(job.video) if isinstance(backend, DeepSpeechNpyBackend) else None
    n_limit = None if precomputed is None else len(precomputed)
    analysis = analyse_video(
        job.video,
        fps=options.fps,
        detector=shared_detector(upsample=options.upsample),
        crop=options.crop,
        audio=job.audio if job.audio is not None else backend.needs_audio,
        max_missing=options.max_missing,
        max_av_gap_s=options.max_av_gap_s,
        allow_silent=options.allow_silent,
        n_frames_limit=n_limit,
        face=options.face,
        image_size=options.size,
        progress=progress,
    )
    n = analysis.n_frames
    if n < MIN_FRAMES:
        raise PreprocessError(
            job.video, f"{n} frame(s) at {options.fps:g} fps: needs at least {MIN_FRAMES} (frame 0 is never listed)"
        )
    warnings = list(analysis.warnings)
    if n < SHORT_FRAMES:
        warnings.append(
            f"{job.video}: only {n} frames: frames have no reference frame {REFERENCE_MIN_DISTANCE} frames away "
            f"(needs {SHORT_FRAMES}); the farthest frame is used"
        )
    if precomputed is not None:
        windows = precomputed[:n]
    else:
        windows = backend.frame_windows(analysis.audio, n, job.video)
    layout = DatasetLayout(tmp)
    layout.make_folders()
    for i, image, lms in iter_crops(analysis, options.size, progress):
        layout.write_frame(job.number, i, image, options.jpeg_quality)
        layout.write_landmarks(job.number, i, lms)
        layout.write_audio(job.number, i, smooth_window(windows, i))
    audio_seconds = len(analysis.audio) / SAMPLE_RATE if analysis.audio is not None else n / options.fps
    return VideoResult(
        number=job.number,
        source=job.video.name,
        status="done",
        frames=n,
        missed_faces=analysis.n_missing,
        audio_seconds=round(audio_seconds, 3),
        warnings=warnings,
        short=n < SHORT_FRAMES,
    )


def source_stamp(video: Path) -> dict[str, int]:
    """What a done marker records of its source file, to tell another file of the same name from it."""
    st = video.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def stale_marker(marker: dict[str, Any], video: Path) -> str | None:
    """Why the finished video of ``marker`` was not made from ``video`` (None: it was, or the marker cannot tell)."""
    stamp = source_stamp(video)
    changed = [f"{k} {marker[k]} -> {v}" for k, v in stamp.items() if k in marker and marker[k] != v]
    return ", ".join(changed) or None


def _commit(
    out: Path, tmp: Path, job: VideoJob, result: VideoResult, options: BuildOptions, replace: bool = False
) -> None:
    """Move a finished video's files into place (``replace``: first delete an older version's), then write its
    done marker (the commit point)."""
    done_dir = out / DONE_DIR
    done_dir.mkdir(parents=True, exist_ok=True)
    moving = done_dir / f"{job.number}.moving"
    moving.touch()
    if replace:
        _remove_video_files(out, job.number)
    layout, staged = DatasetLayout(out), DatasetLayout(tmp)
    layout.make_folders()
    for kind in FRAME_FILES:
        with os.scandir(staged.folder(kind)) as entries:
            for entry in entries:
                os.replace(entry.path, layout.folder(kind) / entry.name)
    marker = {
        "source": job.video.name,
        "path": str(job.video.resolve()),
        "audio": str(job.audio.resolve()) if job.audio else None,
        **source_stamp(job.video),
        "frames": result.frames,
        "missed_faces": result.missed_faces,
        "audio_seconds": result.audio_seconds,
        **options.settings(),
    }
    write_json(done_dir / f"{job.number}.json", marker)
    moving.unlink(missing_ok=True)


def process_video(job: VideoJob, out: str | Path, options: BuildOptions, progress: bool = False) -> VideoResult:
    """Write one video into the dataset at ``out`` atomically; never raises for bad input (returns 'failed')."""
    out = Path(out)
    start = time.monotonic()
    redo = None
    marker = read_json(out / DONE_DIR / f"{job.number}.json")
    if marker is not None:
        changed = stale_marker(marker, job.video)
        if changed is None:  # a run killed after the commit point may have left these behind
            shutil.rmtree(out / TMP_DIR / str(job.number), ignore_errors=True)
            (out / DONE_DIR / f"{job.number}.moving").unlink(missing_ok=True)
            return VideoResult(job.number, job.video.name, "skipped")
        redo = f"{job.video}: not the file video {job.number} was made from ({changed}); redoing video {job.number}"
    tmp = out / TMP_DIR / str(job.number)
    shutil.rmtree(tmp, ignore_errors=True)
    if (out / DONE_DIR / f"{job.number}.moving").exists():
        _remove_video_files(out, job.number)
    try:
        result = _write_frames(job, tmp, options, progress)
        _commit(out, tmp, job, result, options, replace=redo is not None)
        if redo:
            result.warnings.insert(0, redo)
    except PreprocessError as e:
        return VideoResult(job.number, job.video.name, "failed", error=str(e), warnings=[redo] if redo else [])
    except Exception as e:  # a crash on one video must not stop the others
        if isinstance(e, OSError) and e.errno in DISK_FULL:  # stops the whole run: the next video would fail too
            raise  # not this video's fault: the run stops (finished videos are kept, this one's .tmp is removed)
        log.debug("unexpected error on %s", job.video, exc_info=True)
        return VideoResult(job.number, job.video.name, "failed", error=f"{job.video}: {type(e).__name__}: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.debug("%s: %d frames in %.1f s", job.video, result.frames, time.monotonic() - start)
    return result


#: ``prctl`` option that delivers a signal to this process when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1
#: Seconds between the watchdog's checks that the parent still lives.
PARENT_POLL_S = 0.5


def _exit_with_parent(parent: int) -> None:
    """Make this worker die with ``parent`` (a ``kill -9`` of the run must not leave workers writing into --out).

    On Linux the kernel sends SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG)``; it fires when the thread
    that started the worker ends, which is the thread running the pool for the pool's whole life). A daemon thread
    also exits the worker once it has been re-parented: the fallback elsewhere, and it covers a parent that died
    before ``prctl`` ran.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no usable libc: the watchdog alone
            pass
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _worker_init(parent: int | None = None) -> None:
    if parent is not None:
        _exit_with_parent(parent)
    import cv2

    cv2.setNumThreads(1)


# --------------------------------------------------------------------------------------------- index + splits


def _select_videos(spec: Sequence[str], sources: dict[int, str]) -> set[int]:
    """Video numbers named by numbers, file names or stems; a single ``@file`` reads one name per line."""
    items: list[str] = []
    for s in spec:
        if s.startswith("@"):
            path = Path(s[1:])
            if not path.is_file():
                raise PreprocessError(path, "video list file does not exist")
            items += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            items += [x for x in s.split(",") if x]
    by_name = {name: v for v, name in sources.items()} | {Path(name).stem: v for v, name in sources.items()}
    chosen: set[int] = set()
    for item in items:
        if item.isdigit() and int(item) in sources:
            chosen.add(int(item))
        elif Path(item).name in by_name:
            chosen.add(by_name[Path(item).name])
        else:
            raise PreprocessError("--test-videos/--train-videos", f"unknown video {item!r}")
    return chosen


def split_videos(
    sources: dict[int, str], split: SplitOptions, known: dict[int, str] | None = None
) -> tuple[list[int], list[int]]:
    """``(train, test)`` video numbers.

    ``sources``: the finished videos; ``known``: all videos named so far (lists may name unfinished ones).
    With lists: the given test videos, and the given train videos (default: all others). Otherwise each video
    goes to test when ``sha256(f"{seed}:{file name}")`` maps below ``test_ratio`` - a per-video decision, so adding
    videos later never moves existing ones - with at least one test video when there are two or more videos and
    ``test_ratio > 0``.
    """
    numbers = sorted(sources)
    if split.test_videos is not None or split.train_videos is not None:
        known = {**(known or {}), **sources}
        test = _select_videos(split.test_videos or (), known) & set(numbers)
        train = set(numbers) - test
        if split.train_videos is not None:
            train = _select_videos(split.train_videos, known) & set(numbers)
        return sorted(train), sorted(test)

    def score(v: int) -> float:
        digest = hashlib.sha256(f"{split.seed}:{sources[v]}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    test = {v for v in numbers if score(v) < split.test_ratio}
    if not test and split.test_ratio > 0 and len(numbers) >= 2:
        test = {min(numbers, key=score)}
    if len(test) == len(numbers) and len(numbers) >= 2:
        test.discard(max(numbers, key=score))
    return [v for v in numbers if v not in test], sorted(test)


def finalize(
    out: str | Path,
    split: SplitOptions = SplitOptions(),
    failures: dict[int, str] | None = None,
    sources: dict[int, str] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """(Re)write ``meta.json``, ``data.txt`` and the split lists from the done markers. Returns the meta."""
    out = Path(out)
    layout = DatasetLayout(out, split.split_dir)
    markers = read_done_markers(out)
    meta = layout.read_meta_if_any()
    videos: dict[str, dict[str, Any]] = dict(meta.get("videos") or {})
    for v, name in (sources or {}).items():
        videos.setdefault(str(v), {"source": name, "status": "pending"})
    for v, error in (failures or {}).items():
        videos[str(v)] = {**videos.get(str(v), {}), "status": "failed", "error": error}
    settings = dict(settings or {})
    for v, marker in markers.items():
        entry = {k: marker[k] for k in _MARKER_FIELDS if k in marker}
        videos[str(v)] = {**entry, "status": "done"}
        for key in ("fps", "image_size", "audio_feature"):
            settings.setdefault(key, marker[key])
    for key in ("fps", "image_size", "audio_feature"):
        if key not in settings and key in meta:
            settings[key] = meta[key]
    max_v = max((int(v) for v in videos), default=0)
    counts = {v: int(markers[v]["frames"]) if v in markers else 0 for v in range(1, max_v + 1)}
    done_sources = {v: markers[v]["source"] for v in sorted(markers)}
    texts: dict[str, str] = {}
    if done_sources:
        known = {int(v): e["source"] for v, e in videos.items() if isinstance(e, dict) and e.get("source")}
        train, test = split_videos(done_sources, split, known)
        texts = {"train": split_text(train, counts), "test": split_text(test, counts)}
    for key, path in layout.split_lists.items():  # before writing anything: never overwrite another's lists
        problem = layout.foreign_split_list(meta, key, texts.get(key))
        if problem:
            raise PreprocessError(path, f"{problem}; give this dataset its own --split-dir, or delete the file")
    for key, text in texts.items():
        atomic_write_text(layout.split_lists[key], text)
    if texts:
        log.info(
            "split: %d train videos %s, %d test videos %s -> %s", len(train), train, len(test), test, layout.split_dir
        )
    record = layout.split_record(texts) if texts else dict(meta.get(SPLIT_LISTS_KEY) or {})
    videos_sorted = {str(k): videos[str(k)] for k in sorted(int(v) for v in videos)}
    meta = dataset_meta(settings, videos_sorted, **{SPLIT_LISTS_KEY: record})
    if settings:
        layout.write_meta(meta)
        layout.write_data_txt(counts[v] for v in range(1, max_v + 1))
    return meta


# --------------------------------------------------------------------------------------------- whole run


def build_dataset(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    options: BuildOptions = BuildOptions(),
    *,
    audio: str | os.PathLike | None = None,
    workers: int = 1,
    shard: str | None = None,
    split: SplitOptions = SplitOptions(),
    progress: bool = True,
) -> BuildSummary:
    """Preprocess videos into the dataset at ``out`` (resumable; finished videos are skipped).

    Raises:
        PreprocessError: for problems with the command as a whole (missing inputs, settings that differ from the
            existing dataset's). Problems with single videos are reported in the summary instead.
    """
    started = time.monotonic()
    out = Path(out)
    videos = find_videos(inputs)
    audio_path = Path(audio) if audio is not None else None
    check_writable(out, split.split_dir)
    check_settings(out, options)
    make_backend_check = _backend(options)  # fail early on a bad backend setup (missing model, transformers)
    del make_backend_check
    shard_i, shard_n = parse_shard(shard)
    with run_lock(out, shard_i, shard_n):
        return _build_locked(videos, out, options, audio_path, workers, shard_i, shard_n, split, progress, started)


def _build_locked(
    videos: list[Path],
    out: Path,
    options: BuildOptions,
    audio_path: Path | None,
    workers: int,
    shard_i: int,
    shard_n: int,
    split: SplitOptions,
    progress: bool,
    started: float,
) -> BuildSummary:
    numbers = assign_numbers(out, videos)
    jobs = [
        VideoJob(numbers[v], v, audio_for(v, audio_path, len(videos)))
        for v in videos
        if (numbers[v] - 1) % shard_n == shard_i
    ]
    sources = {numbers[v]: v.name for v in videos}
    with _finalize_lock(out):  # records the numbering before any work
        finalize(out, split, sources=sources, settings=options.settings())
    summary = BuildSummary()
    failures: dict[int, str] = {}

    def account(result: VideoResult) -> None:
        for message in result.warnings:
            log.warning(message)
        if result.status == "failed":
            summary.failed += 1
            summary.failures[result.source] = result.error or "?"
            failures[result.number] = result.error or "?"
            log.error("FAILED %s", result.error)
            return
        if result.status == "skipped":
            summary.skipped += 1
            return
        summary.done += 1
        summary.short += result.short
        summary.frames += result.frames
        summary.missed_faces += result.missed_faces
        summary.audio_seconds += result.audio_seconds

    bar = tqdm(total=len(jobs), desc="videos", unit="video", disable=not progress)
    with bar:
        if workers <= 1:
            for job in jobs:
                account(process_video(job, out, options, progress=progress))
                bar.update(1)
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)
            ) as pool:
                futures = [pool.submit(process_video, job, out, options) for job in jobs]
                try:
                    for future in as_completed(futures):
                        account(future.result())
                        bar.update(1)
                except BaseException:  # e.g. disk full: start no other video
                    for future in futures:
                        future.cancel()
                    raise
    with _finalize_lock(out):
        finalize(out, split, failures=failures, sources=sources, settings=options.settings())
    try:
        (out / TMP_DIR).rmdir()  # only when empty: other shards may still be working
    except OSError:
        pass
    summary.seconds = time.monotonic() - started
    log.info(
        "summary: %d videos written, %d skipped (already done), %d failed; %d frames, %d frames without a face "
        "(filled), %.1f s of audio; %d shorter than the reference distance (%d frames); %.1f s",
        summary.done,
        summary.skipped,
        summary.failed,
        summary.frames,
        summary.missed_faces,
        summary.audio_seconds,
        summary.short,
        SHORT_FRAMES,
        summary.seconds,
    )
    for source, error in summary.failures.items():
        log.error("failed: %s -> %s", source, error)
    return summary
